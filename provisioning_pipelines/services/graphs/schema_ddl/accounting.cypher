// schema: accounting
// description: Ledger accounts, journal entries and invoices exchanged between entities.
// requires: base

CREATE NODE TABLE Account(
    identifier STRING PRIMARY KEY,
    code STRING,
    name STRING,
    account_type STRING,
    currency STRING,
    created_at TIMESTAMP
);

CREATE NODE TABLE JournalEntry(
    identifier STRING PRIMARY KEY,
    entry_date DATE,
    memo STRING,
    amount DOUBLE,
    currency STRING,
    created_at TIMESTAMP
);

CREATE NODE TABLE Invoice(
    identifier STRING PRIMARY KEY,
    number STRING,
    issued_on DATE,
    due_on DATE,
    amount DOUBLE,
    currency STRING,
    status STRING,
    created_at TIMESTAMP
);

CREATE REL TABLE HAS_ACCOUNT(FROM Entity TO Account, opened_on DATE);

CREATE REL TABLE POSTED_TO(FROM JournalEntry TO Account, debit DOUBLE, credit DOUBLE);

CREATE REL TABLE ISSUED(FROM Entity TO Invoice);

CREATE REL TABLE BILLED_TO(FROM Invoice TO Entity);

CREATE REL TABLE SETTLED_BY(FROM Invoice TO JournalEntry, settled_on DATE);
