// schema: procurement
// description: Purchase orders that tie suppliers' products to the invoices that bill them.
// requires: base, accounting, supply_chain

CREATE NODE TABLE PurchaseOrder(
    identifier STRING PRIMARY KEY,
    number STRING,
    ordered_on DATE,
    status STRING,
    total DOUBLE,
    currency STRING
);

CREATE REL TABLE PLACED(FROM Entity TO PurchaseOrder);

CREATE REL TABLE ORDERED_FROM(FROM PurchaseOrder TO Entity);

CREATE REL TABLE ORDERS(FROM PurchaseOrder TO Product, quantity DOUBLE, unit_price DOUBLE);

CREATE REL TABLE INVOICED_AS(FROM PurchaseOrder TO Invoice);
