// schema: base
// description: Companies and other entities, the documents that mention them, and free-form tags.
// requires:
//
// Every graph starts from this schema; extensions only add tables that may point at these.
// One statement per ';'. Comments are '//' lines. No ';' inside a statement.

CREATE NODE TABLE Entity(
    identifier STRING PRIMARY KEY,
    name STRING,
    category STRING,
    website STRING,
    description STRING,
    aliases STRING[],
    country STRING,
    created_at TIMESTAMP,
    updated_at TIMESTAMP
);

CREATE NODE TABLE Document(
    identifier STRING PRIMARY KEY,
    title STRING,
    uri STRING,
    mime_type STRING,
    content STRING,
    published_at TIMESTAMP,
    created_at TIMESTAMP
);

CREATE NODE TABLE Tag(
    name STRING PRIMARY KEY,
    description STRING,
    created_at TIMESTAMP
);

CREATE REL TABLE RELATED_TO(
    FROM Entity TO Entity,
    relation STRING,
    weight DOUBLE,
    source STRING,
    created_at TIMESTAMP
);

CREATE REL TABLE MENTIONS(
    FROM Document TO Entity,
    snippet STRING,
    confidence DOUBLE,
    created_at TIMESTAMP
);

CREATE REL TABLE TAGGED(
    FROM Entity TO Tag,
    FROM Document TO Tag,
    created_at TIMESTAMP
);
