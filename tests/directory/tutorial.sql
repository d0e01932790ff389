-- The tutorial's DDL, exactly as its readers created their databases
-- (SPEC section 2). Tests build "a tutorial database" from it and upgrade it.

CREATE TABLE domain (
    domain varchar(50) PRIMARY KEY,
    node varchar(50) NULL,
    comment varchar(500) NULL
);

CREATE TABLE forward (
    source varchar(80) PRIMARY KEY,
    destination text NOT NULL,
    comment varchar(500) NULL
);

CREATE TABLE relay (
    source varchar(80) PRIMARY KEY,
    node varchar(50) NOT NULL,
    comment varchar(500) NULL
);

CREATE TABLE mailbox (
    email varchar(80) PRIMARY KEY,
    password varchar(20) NOT NULL,
    quota bigint DEFAULT 10485760,
    node varchar(50) NOT NULL,
    comment varchar(500) NULL
);

CREATE TABLE transport (
    domain varchar(128) NOT NULL DEFAULT '' UNIQUE,
    transport varchar(128) NOT NULL DEFAULT '',
    node varchar(50) NOT NULL,
    comment varchar(500) NULL
);
