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
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW nodes AS
    SELECT name, conninfo, added_at FROM shoal.node ORDER BY name;

CREATE FUNCTION add_node(name text, conninfo text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF conninfo IS NULL OR btrim(conninfo) = '' THEN
        RAISE EXCEPTION 'conninfo of node "%" must not be empty', name;
    END IF;
    INSERT INTO shoal.node (name, conninfo) VALUES (add_node.name, add_node.conninfo);
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

REVOKE ALL ON FUNCTION add_node(text, text), remove_node(text) FROM PUBLIC;
GRANT SELECT ON nodes TO PUBLIC;
