// schema: supply_chain
// description: Products, facilities and shipments, and which entity supplies which.
// requires: base

CREATE NODE TABLE Product(
    identifier STRING PRIMARY KEY,
    sku STRING,
    name STRING,
    unit STRING,
    created_at TIMESTAMP
);

CREATE NODE TABLE Facility(
    identifier STRING PRIMARY KEY,
    name STRING,
    kind STRING,
    country STRING,
    city STRING,
    latitude DOUBLE,
    longitude DOUBLE
);

CREATE NODE TABLE Shipment(
    identifier STRING PRIMARY KEY,
    shipped_on DATE,
    arrived_on DATE,
    quantity DOUBLE,
    status STRING
);

CREATE REL TABLE SUPPLIES(FROM Entity TO Entity, since DATE, tier INT16);

CREATE REL TABLE MAKES(FROM Entity TO Product);

CREATE REL TABLE OPERATES(FROM Entity TO Facility);

CREATE REL TABLE STOCKS(FROM Facility TO Product, quantity DOUBLE);

CREATE REL TABLE CARRIES(FROM Shipment TO Product, quantity DOUBLE);

CREATE REL TABLE SHIPPED_FROM(FROM Shipment TO Facility);

CREATE REL TABLE SHIPPED_TO(FROM Shipment TO Facility);
