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

-- The nodes of the cluster, as this node knows them.
CREATE TABLE node (
    name     text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]*$'),
    conninfo text NOT NULL,
    -- where its multiplexer listens; NULL: its PostgreSQL port + 1000 (shoal.mux_port's default)
    mux_port int CHECK (mux_port BETWEEN 1 AND 65535),
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW nodes AS
    SELECT name, conninfo, mux_port, added_at FROM shoal.node ORDER BY name;

CREATE FUNCTION add_node(name text, conninfo text, mux_port int DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF conninfo IS NULL OR btrim(conninfo) = '' THEN
        RAISE EXCEPTION 'conninfo of node "%" must not be empty', name;
    END IF;
    INSERT INTO shoal.node (name, conninfo, mux_port)
        VALUES (add_node.name, add_node.conninfo, add_node.mux_port);
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'node "%" already exists', add_node.name
        USING HINT = 'Remove it first with shoal.remove_node(), or choose another name.';
END
$$;

CREATE FUNCTION remove_node(name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
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
