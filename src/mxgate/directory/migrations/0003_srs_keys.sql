-- mxgate migration 0003: the keys of the Sender Rewriting Scheme (issue 8).
--
-- Every gateway signs and verifies SRS addresses with the keys of this table,
-- so that a bounce may come back through any of them. One key signs at a
-- time: the one with the latest signs_from that has come. `mxgate srs rotate`
-- inserts a new key whose signs_from is a little in the future (every gateway
-- loads it before any signs with it) and sets retired_at of the keys it
-- replaces to that moment; a retired key still verifies for srs_key_grace.
-- Gateways read the table at start, on NOTIFY mxgate_srs_keys, and every
-- 30 seconds (the way on a replica). It is not part of the routing change log.
--
-- The first key is made here, from pg_strong_random() by way of
-- gen_random_uuid() (PostgreSQL 13 and later): two version-4 UUIDs are 244
-- random bits.

CREATE TABLE IF NOT EXISTS mxgate_srs_key (
    id         bigserial   PRIMARY KEY,
    secret     text        NOT NULL CHECK (length(secret) >= 16),
    created    timestamptz NOT NULL DEFAULT now(),
    signs_from timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz NULL
);

INSERT INTO mxgate_srs_key (secret)
SELECT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
WHERE NOT EXISTS (SELECT 1 FROM mxgate_srs_key);

CREATE OR REPLACE FUNCTION mxgate_srs_key_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mxgate_srs_keys', TG_OP);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS mxgate_srs_key_notify ON mxgate_srs_key;
CREATE TRIGGER mxgate_srs_key_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON mxgate_srs_key
    FOR EACH STATEMENT EXECUTE FUNCTION mxgate_srs_key_notify();
