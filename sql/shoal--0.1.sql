-- shoal: the extension's SQL objects.  Loaded by CREATE EXTENSION shoal into schema shoal.
\echo Use "CREATE EXTENSION shoal" to load this file. \quit

CREATE FUNCTION shoal_fdw_handler() RETURNS fdw_handler
    AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FUNCTION shoal_fdw_validator(text[], oid) RETURNS void
    AS 'MODULE_PATHNAME' LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER shoal_fdw
    HANDLER shoal_fdw_handler
    VALIDATOR shoal_fdw_validator;

COMMENT ON FOREIGN DATA WRAPPER shoal_fdw IS
    'Foreign tables served by Python handlers: a shoal node''s partitions, or any handler named by the wrapper option';

-- Every role reads the catalog views and calls the public functions (each object says what it
-- allows); shoal reads the catalog as the role running the statement.
GRANT USAGE ON SCHEMA shoal TO PUBLIC;

-- The nodes of the cluster, as this node knows them.
CREATE TABLE node (
    name     text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]*$'),
    conninfo text NOT NULL,
    -- where its multiplexer listens; NULL: its PostgreSQL port + 1000 (shoal.mux_port's default)
    mux_port int CHECK (mux_port BETWEEN 1 AND 65535),
    added_at timestamptz NOT NULL DEFAULT now(),
    -- a small number distinct per node: it keeps sequence values and unique_id()s of nodes apart
    id       int NOT NULL UNIQUE CHECK (id BETWEEN 1 AND 1023)
);

CREATE VIEW nodes AS
    SELECT name, conninfo, mux_port, added_at, id FROM shoal.node ORDER BY name;

CREATE FUNCTION add_node(name text, conninfo text, mux_port int DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF conninfo IS NULL OR btrim(conninfo) = '' THEN
        RAISE EXCEPTION 'conninfo of node "%" must not be empty', name;
    END IF;
    -- the lowest free id: nodes registered in the same order everywhere get the same ids
    INSERT INTO shoal.node (name, conninfo, mux_port, id)
        VALUES (add_node.name, add_node.conninfo, add_node.mux_port,
                (SELECT min(i) FROM generate_series(1, 1023) i
                  WHERE NOT EXISTS (SELECT FROM shoal.node n WHERE n.id = i)));
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'node "%" already exists', add_node.name
        USING HINT = 'Remove it first with shoal.remove_node(), or choose another name.';
END
$$;

CREATE FUNCTION remove_node(name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    held int;
BEGIN
    SELECT count(*) INTO held FROM shoal.placement p WHERE p.node = remove_node.name;
    IF held > 0 THEN
        RAISE EXCEPTION 'node "%" still holds % partition(s)', remove_node.name, held
            USING ERRCODE = 'object_in_use',
                  HINT = 'Move its partitions to other nodes first with shoal.move_partition() (see shoal.partitions).';
    END IF;
    DELETE FROM shoal.node WHERE node.name = remove_node.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'node "%" does not exist', remove_node.name;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION add_node(text, text, int), remove_node(text) FROM PUBLIC;
GRANT SELECT ON nodes TO PUBLIC;

-- The multiplexer's health, per peer (the Python client module asks the local multiplexer).
CREATE FUNCTION mux_stats_json() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'shoal_mux_stats_json' LANGUAGE C VOLATILE;

CREATE VIEW mux_stats AS
    SELECT * FROM jsonb_to_recordset(shoal.mux_stats_json()) AS s(
        peer text, state text, msgs_in bigint, msgs_out bigint, bytes_in bigint, bytes_out bigint,
        jobs_in_flight int, jobs_queued int, workers_busy int, workers int,
        latency_p50_us float8, latency_p95_us float8, latency_p99_us float8);

GRANT EXECUTE ON FUNCTION mux_stats_json() TO PUBLIC;
GRANT SELECT ON mux_stats TO PUBLIC;

-- A channel's round trip (in_flight 1) and capacity (many in flight): this node's multiplexer
-- exchanges pings with node's.
CREATE FUNCTION _ping_json(node text, pings int, in_flight int) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'shoal_sql_call' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION ping(node text, pings int DEFAULT 10000, in_flight int DEFAULT 1)
    RETURNS TABLE (node text, pings bigint, seconds float8, pings_per_s float8,
                   p50_us float8, p99_us float8, max_us float8)
    LANGUAGE sql VOLATILE STRICT AS $$
    SELECT * FROM jsonb_to_record(shoal._ping_json(ping.node, ping.pings, ping.in_flight)) AS p(
        node text, pings bigint, seconds float8, pings_per_s float8, p50_us float8, p99_us float8,
        max_us float8)
$$;

REVOKE ALL ON FUNCTION _ping_json(text, int, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION ping(text, int, int) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Distributed and global tables.  Every node holds the same rows here: shoal.sharding writes them
-- on all nodes in the transaction that distributes a table, and commits all nodes at once.

CREATE TABLE distributed (
    relation    regclass PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('hash', 'global')),
    column_name name,                -- the distribution column (hash)
    num_parts   int CHECK (num_parts > 0),
    colocation  int,                 -- tables of one group have the same placement
    CHECK ((kind = 'global') = (column_name IS NULL))
);

CREATE TABLE placement (
    relation       regclass NOT NULL REFERENCES distributed ON DELETE CASCADE,
    part           int NOT NULL,     -- the hash remainder
    partition_name name NOT NULL,    -- in the distributed table's schema
    node           text NOT NULL REFERENCES node (name) ON UPDATE CASCADE,
    PRIMARY KEY (relation, part)
);

CREATE VIEW tables AS
    SELECT d.relation AS table_name, d.kind, d.column_name, d.num_parts, d.colocation
      FROM shoal.distributed d ORDER BY d.relation::text;

CREATE VIEW partitions AS
    SELECT p.relation AS table_name, p.part,
           format('%I.%I', n.nspname, p.partition_name) AS partition_name,
           p.node, p.node = current_setting('shoal.node_name', true) AS is_local
      FROM shoal.placement p
      JOIN pg_catalog.pg_class c ON c.oid = p.relation
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     ORDER BY p.relation::text, p.part;

-- Foreign keys of shoal tables, as this node's partitions (or copy) hold them: a distributed
-- table's are on its partitions, referencing the partitions of the same number (shown by their
-- table).  A node that holds no partition of a distributed table shows none of its keys.
CREATE VIEW foreign_keys AS
    SELECT DISTINCT ON (d.relation::text, c.conname)
           d.relation AS table_name, c.conname::text AS constraint_name,
           ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY k(n, i)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                  ORDER BY k.i) AS columns,
           coalesce(r.inhparent, c.confrelid)::regclass AS referenced_table,
           ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY k(n, i)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                  ORDER BY k.i) AS referenced_columns,
           CASE c.confupdtype WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT' WHEN 'c' THEN 'CASCADE'
                WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END AS on_update,
           CASE c.confdeltype WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT' WHEN 'c' THEN 'CASCADE'
                WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END AS on_delete,
           c.convalidated AS validated
      FROM shoal.distributed d
      JOIN pg_catalog.pg_constraint c ON c.contype = 'f' AND (c.conrelid = d.relation OR c.conrelid IN
           (SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = d.relation))
      LEFT JOIN pg_catalog.pg_inherits r ON r.inhrelid = c.confrelid
     ORDER BY d.relation::text, c.conname;

GRANT SELECT ON distributed, placement, tables, partitions, foreign_keys TO PUBLIC;

-- A dropped table leaves the catalog with it, on whichever node drops it.
CREATE FUNCTION _forget_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    DELETE FROM shoal.distributed d
     USING pg_catalog.pg_event_trigger_dropped_objects() o
     WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objid = d.relation AND o.objsubid = 0;
END
$$;
CREATE EVENT TRIGGER shoal_forget_dropped ON sql_drop EXECUTE FUNCTION _forget_dropped();

-- Functions written in Python (shoal.sharding.api), reached through one C entry point.
CREATE FUNCTION create_distributed_table(relation regclass, "column" name, partitions int DEFAULT NULL,
                                         colocate_with regclass DEFAULT NULL) RETURNS void
    AS 'MODULE_PATHNAME', 'shoal_sql_call' LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION create_global_table(relation regclass) RETURNS void
    AS 'MODULE_PATHNAME', 'shoal_sql_call' LANGUAGE C CALLED ON NULL INPUT VOLATILE;

-- A unique constraint or index added to a distributed table after distribution, made on one of its
-- partitions (shoal.sharding.uniques calls it on the node holding the partition).
CREATE FUNCTION _add_unique(statement text, partition regclass, "column" name) RETURNS void
    AS 'MODULE_PATHNAME', 'shoal_add_unique' LANGUAGE C STRICT VOLATILE;
-- ... after which the backends of every node forget the keys they saw on its partitions.
CREATE FUNCTION _forget_partitions(relation regclass) RETURNS void
    AS 'MODULE_PATHNAME', 'shoal_forget_partitions' LANGUAGE C STRICT VOLATILE;

-- Give a node registered after shoal tables were made the tables it lacks (shoal up calls it when
-- it grows a cluster); returns how many it created there.
CREATE FUNCTION sync_node(name text) RETURNS int
    AS 'MODULE_PATHNAME', 'shoal_sql_call' LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION sync_node(text) FROM PUBLIC;

-- Move a partition of a distributed table, with the co-located tables' partitions of the same
-- number, to another node (rebalancing, emptying a node before remove_node); returns the rows
-- moved.  Writers of those tables wait until it commits.
CREATE FUNCTION move_partition(partition regclass, node text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'shoal_sql_call' LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION move_partition(regclass, text) FROM PUBLIC;

-- Global tables: what a statement changed, shipped to the other copies (statement triggers).  Rows
-- travel as the text of the row type (exact for every type), in a text[] literal.
CREATE FUNCTION _ship_changes(relation regclass, op text, new_rows text, old_rows text) RETURNS void
    AS 'MODULE_PATHNAME', 'shoal_sql_call' LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION _ship_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM shoal._ship_changes(TG_RELID, 'insert', (SELECT array_agg((r.*)::text)::text FROM shoal_new r), NULL);
    RETURN NULL;
END
$$;
CREATE FUNCTION _ship_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM shoal._ship_changes(TG_RELID, 'update', (SELECT array_agg((r.*)::text)::text FROM shoal_new r),
                                (SELECT array_agg((r.*)::text)::text FROM shoal_old r));
    RETURN NULL;
END
$$;
CREATE FUNCTION _ship_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM shoal._ship_changes(TG_RELID, 'delete', NULL, (SELECT array_agg((r.*)::text)::text FROM shoal_old r));
    RETURN NULL;
END
$$;

-- A 64-bit id unique across the cluster without coordination (like PgDog's): milliseconds since
-- 2024-01-01 (41 bits), the node's id (10 bits), a per-node sequence (12 bits).
CREATE SEQUENCE unique_id_seq MAXVALUE 4095 CYCLE;
GRANT USAGE ON SEQUENCE unique_id_seq TO PUBLIC;
CREATE FUNCTION unique_id() RETURNS bigint LANGUAGE sql VOLATILE AS $$
    SELECT ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - 1704067200000) << 22)
         | ((SELECT coalesce(max(n.id), 0) FROM shoal.node n
              WHERE n.name = current_setting('shoal.node_name', true))::bigint << 12)
         | nextval('shoal.unique_id_seq')
$$;

CREATE FUNCTION _sync_privileges(relation regclass) RETURNS void
    AS 'MODULE_PATHNAME', 'shoal_sql_call' LANGUAGE C STRICT VOLATILE;

-- ---------------------------------------------------------------------------------------------
-- Distributed transactions left in doubt by a crash (shoal.transactions.indoubt).  Prepared parts
-- are named shoal:<coordinator>:<transaction id there>:<nonce>.  The coordinator's transaction
-- records its gid here before it commits, so the row exists if and only if it committed: that is
-- the decision.  Each node's multiplexer settles its own every few seconds; these are for operators.

CREATE TABLE decided (
    gid        text PRIMARY KEY,
    decided_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('decided', '');

CREATE FUNCTION _in_doubt_json(settle boolean) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'shoal_sql_call' LANGUAGE C STRICT VOLATILE;

CREATE VIEW in_doubt AS
    SELECT * FROM jsonb_to_recordset(shoal._in_doubt_json(false)) AS d(
        node text, gid text, coordinator text, prepared_at timestamptz, decision text, action text);

-- Settle now, on every node, what the coordinators have decided; what stays (the coordinator is
-- unreachable or still deciding) is listed with action 'left'.
CREATE FUNCTION resolve_in_doubt() RETURNS TABLE (node text, gid text, coordinator text,
                                                  prepared_at timestamptz, decision text, action text)
    LANGUAGE sql VOLATILE AS $$
    SELECT * FROM jsonb_to_recordset(shoal._in_doubt_json(true)) AS d(
        node text, gid text, coordinator text, prepared_at timestamptz, decision text, action text)
$$;

REVOKE ALL ON FUNCTION _in_doubt_json(boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION resolve_in_doubt() FROM PUBLIC;
