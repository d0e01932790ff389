-- mxgate migration 0001: the five routing tables (SPEC section 2).
--
-- On an empty database this creates the tables in their final shape. On a
-- database created with the tutorial's DDL it upgrades them in place, keeping
-- every row; column names and meanings stay as they were, so Dovecot's and
-- Postfix's existing queries keep working. Every step checks the catalog
-- first, so running this file again changes nothing.
--
-- Widths: RFC 5321 section 4.5.3.1 allows 255 octets for a domain and 254 for
-- an address (a 256-octet path minus its angle brackets); the tutorial stops
-- at 50 and 80. A {SHA512-CRYPT} hash is 106 characters plus its 14-character
-- scheme prefix; the tutorial's varchar(20) cannot hold even an MD5-crypt one.

CREATE TABLE IF NOT EXISTS domain (
    domain  varchar(255) PRIMARY KEY,
    node    varchar(50)  NULL,
    comment varchar(500) NULL
);

CREATE TABLE IF NOT EXISTS forward (
    source      varchar(254) NOT NULL,
    destination text         NOT NULL,
    comment     varchar(500) NULL,
    CONSTRAINT forward_pkey PRIMARY KEY (source, destination)
);

CREATE TABLE IF NOT EXISTS relay (
    source  varchar(254) PRIMARY KEY,
    node    varchar(50)  NOT NULL,
    comment varchar(500) NULL
);

CREATE TABLE IF NOT EXISTS mailbox (
    email    varchar(254) PRIMARY KEY,
    password varchar(255) NOT NULL,
    quota    bigint       DEFAULT 10485760,
    node     varchar(50)  NOT NULL,
    comment  varchar(500) NULL
);

-- node '' means "for gateways"; it stays NOT NULL (as in the tutorial) so that
-- the unique constraint covers gateway rows too (NULLs never collide).
CREATE TABLE IF NOT EXISTS transport (
    domain    varchar(255) NOT NULL DEFAULT '',
    transport varchar(255) NOT NULL DEFAULT '',
    node      varchar(50)  NOT NULL DEFAULT '',
    comment   varchar(500) NULL,
    CONSTRAINT transport_domain_node_key UNIQUE (domain, node)
);

-- Widen a varchar column, never narrow it: a column someone already made
-- wider (or turned into text) is left alone. Growing a varchar limit is a
-- catalog change in PostgreSQL, not a table rewrite. pg_temp: this helper
-- disappears with the session.
CREATE OR REPLACE FUNCTION pg_temp.mxgate_widen(tbl text, col text, len integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    typ text;
    cur integer;
BEGIN
    SELECT format_type(a.atttypid, NULL), a.atttypmod - 4 INTO typ, cur
    FROM pg_attribute a
    WHERE a.attrelid = to_regclass(tbl) AND a.attname = col AND NOT a.attisdropped;
    IF typ = 'character varying' AND cur > 0 AND cur < len THEN
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I TYPE varchar(%s)', tbl, col, len);
    END IF;
END
$$;

SELECT pg_temp.mxgate_widen('domain', 'domain', 255);
SELECT pg_temp.mxgate_widen('forward', 'source', 254);
SELECT pg_temp.mxgate_widen('relay', 'source', 254);
SELECT pg_temp.mxgate_widen('mailbox', 'email', 254);
SELECT pg_temp.mxgate_widen('mailbox', 'password', 255);
SELECT pg_temp.mxgate_widen('transport', 'domain', 255);
SELECT pg_temp.mxgate_widen('transport', 'transport', 255);

-- forward: the tutorial's PRIMARY KEY (source) forbids the several rows per
-- source that it describes; the key becomes (source, destination).
DO $$
DECLARE
    pk   name;
    cols text[];
BEGIN
    SELECT c.conname, array_agg(a.attname::text ORDER BY k.ord) INTO pk, cols
    FROM pg_constraint c
    CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
    WHERE c.conrelid = to_regclass('forward') AND c.contype = 'p'
    GROUP BY c.conname;
    IF pk IS NULL THEN
        ALTER TABLE forward ADD CONSTRAINT forward_pkey PRIMARY KEY (source, destination);
    ELSIF cols <> ARRAY['source', 'destination'] THEN
        EXECUTE format('ALTER TABLE forward DROP CONSTRAINT %I', pk);
        ALTER TABLE forward ADD CONSTRAINT forward_pkey PRIMARY KEY (source, destination);
    END IF;
END
$$;

-- transport: UNIQUE (domain) forbids a gateway row and node rows for one
-- domain; uniqueness moves to (domain, node).
UPDATE transport SET node = '' WHERE node IS NULL;
ALTER TABLE transport ALTER COLUMN node SET DEFAULT '';
ALTER TABLE transport ALTER COLUMN node SET NOT NULL;

DO $$
DECLARE
    r record;
    domain_col smallint;
    node_col smallint;
BEGIN
    SELECT attnum INTO domain_col FROM pg_attribute
    WHERE attrelid = to_regclass('transport') AND attname = 'domain';
    SELECT attnum INTO node_col FROM pg_attribute
    WHERE attrelid = to_regclass('transport') AND attname = 'node';
    FOR r IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = to_regclass('transport') AND contype IN ('u', 'p')
          AND conkey = ARRAY[domain_col]
    LOOP
        EXECUTE format('ALTER TABLE transport DROP CONSTRAINT %I', r.conname);
    END LOOP;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = to_regclass('transport') AND contype IN ('u', 'p')
          AND conkey = ARRAY[domain_col, node_col]
    ) THEN
        ALTER TABLE transport
            ADD CONSTRAINT transport_domain_node_key UNIQUE (domain, node);
    END IF;
END
$$;
