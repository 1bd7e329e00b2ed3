// schema: crm
// description: People at entities, the deals pursued with them and every recorded interaction.
// requires: base

CREATE NODE TABLE Contact(
    identifier STRING PRIMARY KEY,
    full_name STRING,
    email STRING,
    phone STRING,
    job_title STRING,
    created_at TIMESTAMP
);

CREATE NODE TABLE Deal(
    identifier STRING PRIMARY KEY,
    name STRING,
    stage STRING,
    amount DOUBLE,
    currency STRING,
    expected_close DATE,
    created_at TIMESTAMP
);

CREATE NODE TABLE Interaction(
    identifier STRING PRIMARY KEY,
    channel STRING,
    occurred_at TIMESTAMP,
    summary STRING
);

CREATE REL TABLE WORKS_AT(FROM Contact TO Entity, role STRING, since DATE);

CREATE REL TABLE DEAL_WITH(FROM Deal TO Entity);

CREATE REL TABLE DEAL_CONTACT(FROM Deal TO Contact, role STRING);

CREATE REL TABLE INVOLVED(FROM Interaction TO Contact);

CREATE REL TABLE CONCERNS(FROM Interaction TO Deal);
