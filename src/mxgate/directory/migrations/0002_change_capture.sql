-- mxgate migration 0002: change capture (SPEC section 7).
--
-- Row triggers on the five tables append the key of every changed row to
-- mxgate_change_log (old and new key on UPDATE), and TRUNCATE appends a
-- "reload everything" entry. The log's id is the truth: gateways read the
-- rows with id above the last one they applied, re-read those key groups and
-- so converge, on a replica as well. NOTIFY on channel mxgate_changes is only
-- a wake-up, so that a gateway on the primary need not wait for its next poll.
--
-- Why the txid column: ids come from a sequence when the row is written, but
-- transactions commit in any order, so id 10 can become visible after id 11.
-- A reader therefore remembers the transactions that were still in progress
-- in its snapshot and reads their entries again later (see changes.py),
-- rather than serialising every writer on a lock.
--
-- Retention: the log grows with every edit. Delete old entries with
--     SELECT mxgate_prune_change_log(interval '7 days');
-- (from cron or a timer; never with a plain DELETE). It appends a 'P' entry
-- whose new_key is the highest id it deleted. A gateway whose last applied id
-- is below that number (it was down longer than the retention) cannot know
-- what it missed, sees the 'P' entry among the entries it reads next, and
-- does a full reload instead.

CREATE TABLE IF NOT EXISTS mxgate_change_log (
    id         bigserial   PRIMARY KEY,
    table_name text        NOT NULL,
    op         char(1)     NOT NULL CHECK (op IN ('I', 'U', 'D', 'T', 'P')),
    old_key    text        NULL,
    new_key    text        NULL,
    txid       bigint      NOT NULL DEFAULT txid_current(),
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS mxgate_change_log_txid_idx ON mxgate_change_log (txid);
CREATE INDEX IF NOT EXISTS mxgate_change_log_changed_at_idx ON mxgate_change_log (changed_at);

-- Lookups by key group fold case (SPEC section 2); these indexes keep the
-- gateways' re-reads of one key group from scanning a million-row table.
CREATE INDEX IF NOT EXISTS domain_lower_domain_idx ON domain (lower(domain));
CREATE INDEX IF NOT EXISTS forward_lower_source_idx ON forward (lower(source));
CREATE INDEX IF NOT EXISTS relay_lower_source_idx ON relay (lower(source));
CREATE INDEX IF NOT EXISTS mailbox_lower_email_idx ON mailbox (lower(email));
CREATE INDEX IF NOT EXISTS transport_lower_domain_idx ON transport (lower(domain));

-- TG_ARGV[0] is the key column, the others the columns routing reads: an
-- UPDATE that touches none of them (a password or quota change) logs nothing.
-- SECURITY DEFINER so that the roles which edit the tables (admin tools,
-- Dovecot plugins) need no privilege on the log; search_path is pinned below.
CREATE OR REPLACE FUNCTION mxgate_capture_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
    col text;
    changed boolean := TG_OP <> 'UPDATE';
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
    END IF;
    IF NOT changed THEN
        FOREACH col IN ARRAY TG_ARGV LOOP
            IF old_row -> col IS DISTINCT FROM new_row -> col THEN
                changed := true;
                EXIT;
            END IF;
        END LOOP;
    END IF;
    IF changed THEN
        INSERT INTO mxgate_change_log (table_name, op, old_key, new_key)
        VALUES (TG_TABLE_NAME, left(TG_OP, 1), old_row ->> TG_ARGV[0], new_row ->> TG_ARGV[0]);
        -- Identical notifications of one transaction are merged, and all are
        -- delivered at commit: at most one wake-up per table per transaction.
        PERFORM pg_notify('mxgate_changes', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION mxgate_capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO mxgate_change_log (table_name, op) VALUES (TG_TABLE_NAME, 'T');
    PERFORM pg_notify('mxgate_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

-- Deletes the entries older than keep and records how far it deleted, as a
-- 'P' entry (see "Retention" above). Returns the number of entries deleted.
CREATE OR REPLACE FUNCTION mxgate_prune_change_log(keep interval DEFAULT interval '7 days')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    deleted bigint;
    through bigint;
BEGIN
    WITH gone AS (
        DELETE FROM mxgate_change_log WHERE changed_at < now() - keep RETURNING id
    )
    SELECT count(*), max(id) INTO deleted, through FROM gone;
    IF deleted > 0 THEN
        INSERT INTO mxgate_change_log (table_name, op, new_key)
        VALUES ('mxgate_change_log', 'P', through::text);
    END IF;
    RETURN deleted;
END
$$;

DO $$
DECLARE
    t record;
BEGIN
    -- A SECURITY DEFINER function must not resolve names through a schema
    -- its callers can create objects in (pg_temp comes last, explicitly).
    EXECUTE format(
        'ALTER FUNCTION mxgate_capture_row() SET search_path = pg_catalog, %I, pg_temp',
        current_schema());
    EXECUTE format(
        'ALTER FUNCTION mxgate_capture_truncate() SET search_path = pg_catalog, %I, pg_temp',
        current_schema());
    FOR t IN
        SELECT * FROM (VALUES
            ('domain', '''domain'', ''node'''),
            ('mailbox', '''email'', ''node'''),
            ('relay', '''source'', ''node'''),
            ('forward', '''source'', ''destination'''),
            ('transport', '''domain'', ''node'', ''transport''')
        ) AS v(name, args)
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS mxgate_capture ON %I', t.name);
        EXECUTE format(
            'CREATE TRIGGER mxgate_capture AFTER INSERT OR UPDATE OR DELETE ON %I '
            'FOR EACH ROW EXECUTE FUNCTION mxgate_capture_row(%s)', t.name, t.args);
        EXECUTE format('DROP TRIGGER IF EXISTS mxgate_capture_truncate ON %I', t.name);
        EXECUTE format(
            'CREATE TRIGGER mxgate_capture_truncate AFTER TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION mxgate_capture_truncate()', t.name);
    END LOOP;
END
$$;
