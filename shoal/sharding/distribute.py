"""Turning a table into a distributed (hash-partitioned) or global one, on every node at once.

A distributed table is a ``PARTITION BY HASH`` parent on every node; each partition is a plain
table on the node that holds it and a shoal_fdw foreign table on the others.  A global table is a
full copy on every node.  Everything happens in the caller's transaction: on this node through SPI,
on the others through their multiplexers, committed on all nodes together.
"""

from __future__ import annotations

from collections import defaultdict

from shoal.errors import FeatureNotSupported, InvalidDefinition, InvalidParameter, SqlError
from shoal.fdw import backend
from shoal.sharding import catalog, everywhere, foreign_keys, replicate, tabledef
from shoal.sharding.catalog import NodeInfo, Relation, quote_ident, quote_literal

MAX_PARTS = 1024
PARTS_PER_NODE = 2  # the default number of partitions, per node
SEQUENCE_STRIDE = 1024  # nodes' sequences interleave: node id k hands out k, k + 1024, ...


def server_name(node: str) -> str:
    """The foreign server through which the other nodes reach ``node``'s partitions."""
    return f"shoal_{node}"


def create_distributed_table(oid: int, column: str, partitions: int | None,
                             colocate_with: int | None) -> None:
    if column is None:
        raise InvalidParameter("the distribution column must not be null")
    rel, table = _check_convertible(oid, "distribute")
    their_keys = foreign_keys.take_off(rel.sql)
    cluster = _cluster()
    if column not in table.column_names():
        raise SqlError(f'column "{column}" of relation "{rel.name}" does not exist', sqlstate="42703",
                       hint="Distribute the table by one of its columns.")
    for name, definition, keys in table.uniques:
        if column not in keys:
            raise InvalidDefinition(
                f'constraint "{name}" of "{rel.name}" ({definition}) does not include the distribution '
                f'column "{column}"',
                hint="Uniqueness is enforced per partition: every primary key, unique and exclusion "
                     "constraint of a distributed table must include its distribution column.")
    for definition, keys in table.unique_indexes:
        if column not in keys:
            raise InvalidDefinition(
                f'unique index of "{rel.name}" ({definition}) does not include the distribution column '
                f'"{column}"',
                hint="Uniqueness is enforced per partition: every unique index of a distributed table "
                     "must include its distribution column.")
    placement, colocation, partitions = _placement(rel, column, partitions, colocate_with, cluster)

    statements: dict[str, list] = defaultdict(list)
    _servers(cluster, statements)
    identity, restarts = sequences_for(rel, table, cluster, statements)
    moved = _retire(rel)
    column_sql = quote_ident(column)
    for node in cluster:
        statements[node.name].append(table.create_sql(
            rel.sql, f" PARTITION BY HASH ({column_sql})", identity.get(node.name)))
        statements[node.name] += own_sequences(rel, table, node.name)
    for part, node in enumerate(placement):
        partition = _partition_name(rel, part)
        bound = f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {part})"
        for other in cluster:
            if other.name == node:
                statements[node].append(f"CREATE TABLE {partition} PARTITION OF {rel.sql} {bound}")
                statements[node] += [f"ALTER TABLE {partition} ADD {definition}"
                                     for _, definition, _ in table.uniques]
                statements[node] += [_on_partition(definition, partition)
                                     for definition, _ in table.unique_indexes]
            else:
                statements[other.name].append(
                    foreign_partition_sql(rel, _part_table(rel, part), bound, node))
    parts = [(part, _part_table(rel, part), node) for part, node in enumerate(placement)]
    for node in cluster:
        statements[node.name] += catalog_rows(rel, column, partitions, colocation, parts)
    everywhere.run(statements)

    _move_rows(rel, moved, table)
    for statement in restarts:
        backend.query(statement)
    everywhere.run({node.name: table.indexes for node in cluster})
    _put_back(rel, their_keys)


def _put_back(rel: Relation, their_keys: list) -> None:
    """The foreign keys the table had as a plain table, on its partitions or copies now."""
    if their_keys:
        made = catalog.shoal_table(catalog.lookup(rel.schema, rel.name) or 0)
        assert made is not None
        foreign_keys.add(their_keys, made)


def create_global_table(oid: int) -> None:
    rel, table = _check_convertible(oid, "make global")
    their_keys = foreign_keys.take_off(rel.sql)
    cluster = _cluster()
    statements: dict[str, list] = defaultdict(list)
    identity, restarts = sequences_for(rel, table, cluster, statements)
    me = catalog.this_node()
    rows = backend.query(f"SELECT pg_catalog.array_agg(t::text)::text FROM {rel.sql} t")[0][0]
    for node in cluster:
        if node.name != me:
            statements[node.name] += global_copy(rel, table, node.name, identity, rows)
        statements[node.name] += [*ship_triggers(rel), *catalog_rows(rel)]
    everywhere.run(statements)
    for statement in restarts:
        backend.query(statement)
    _put_back(rel, their_keys)


# -- checks ------------------------------------------------------------------------------------

def _check_convertible(oid: int, verb: str) -> tuple[Relation, tabledef.TableDef]:
    rel = catalog.relation(oid)
    existing = catalog.shoal_table(oid)
    if existing is not None:
        what = "distributed" if existing.kind == "hash" else "global"
        raise InvalidParameter(f'table "{rel.name}" is already {what}')
    if rel.kind == "p":
        raise FeatureNotSupported(f'cannot {verb} "{rel.name}": it is partitioned already',
                                  hint="Create it as a plain table; shoal partitions it.")
    if rel.kind != "r":
        raise FeatureNotSupported(f'cannot {verb} "{rel.name}": it is not a table')
    if backend.query("SELECT EXISTS (SELECT FROM pg_catalog.pg_inherits "
                     "WHERE inhrelid = $1::oid OR inhparent = $1::oid)", oid)[0][0]:
        raise FeatureNotSupported(f'cannot {verb} "{rel.name}": it has inheritance parents or children')
    views = [r[0] for r in backend.query(
        "SELECT DISTINCT r.ev_class::regclass::text FROM pg_catalog.pg_depend d "
        "JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid "
        "WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refobjid = $1::oid "
        "AND r.ev_class <> $1::oid", oid)]
    if views:
        raise FeatureNotSupported(f'cannot {verb} "{rel.name}": views depend on it ({", ".join(views)})',
                                  hint="Drop the views, then create them again afterwards.")
    table = tabledef.read(oid)
    # its own foreign keys go to its partitions or copies (foreign_keys); those of plain tables
    # referencing it hold on as they are if it stays a table of its own here (made global)
    if table.referenced_by and verb != "make global":
        raise FeatureNotSupported(
            f'cannot {verb} "{rel.name}": foreign keys of {", ".join(table.referenced_by)} reference it',
            hint="Drop those foreign keys, distribute the tables (co-located), then add them again.")
    return rel, table


def _cluster() -> list[NodeInfo]:
    me = catalog.this_node()
    cluster = catalog.nodes()
    if me not in {n.name for n in cluster}:
        raise SqlError(f'this node ("{me}") is not in shoal.nodes', sqlstate="55000",
                       hint="Register the cluster's nodes on every node (shoal up does).")
    return cluster


def _placement(rel: Relation, column: str, partitions: int | None, colocate_with: int | None,
               cluster: list[NodeInfo]) -> tuple[list[str], int, int]:
    """Which node holds each partition, the co-location group, the number of partitions."""
    if colocate_with is not None:
        other = catalog.shoal_table(colocate_with)
        if other is None or other.kind != "hash":
            name = other.relation.name if other else catalog.relation(colocate_with).name
            raise InvalidParameter(f'cannot co-locate "{rel.name}" with "{name}": it is not distributed')
        if partitions is not None and partitions != other.num_parts:
            raise InvalidParameter(
                f'cannot co-locate "{rel.name}" with "{other.relation.name}": it has {other.num_parts} '
                f"partitions, not {partitions}",
                hint="Co-located tables have the same number of partitions; omit the count.")
        mine = _column_type(rel.oid, column)
        theirs = _column_type(colocate_with, other.column or "")
        if mine != theirs:
            raise InvalidParameter(
                f'cannot co-locate "{rel.name}" with "{other.relation.name}": their distribution '
                f"columns have different types ({mine}, {theirs})")
        nodes = [node for _, _, node in catalog.placement(colocate_with)]
        return nodes, other.colocation or 0, other.num_parts or len(nodes)
    if partitions is None:
        partitions = max(2, PARTS_PER_NODE * len(cluster))
    if not 1 <= partitions <= MAX_PARTS:
        raise InvalidParameter(f"the number of partitions must be between 1 and {MAX_PARTS}")
    group = backend.query("SELECT coalesce(max(colocation), 0) + 1 FROM shoal.distributed")[0][0]
    names = [n.name for n in cluster]
    return [names[part % len(names)] for part in range(partitions)], group, partitions


def _column_type(oid: int, column: str) -> str:
    rows = backend.query("SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
                         "WHERE attrelid = $1::oid AND attname = $2", oid, column)
    return rows[0][0] if rows else "?"


# -- the pieces --------------------------------------------------------------------------------

def _part_table(rel: Relation, part: int) -> str:
    return f"{rel.name[:56]}_{part}"


def _partition_name(rel: Relation, part: int) -> str:
    return f"{quote_ident(rel.schema)}.{quote_ident(_part_table(rel, part))}"


def _servers(cluster: list[NodeInfo], statements: dict[str, list]) -> None:
    for node in cluster:
        statements[node.name] += [server_sql(other.name) for other in cluster if other.name != node.name]


def server_sql(node: str) -> str:
    """Create the foreign server of ``node``'s partitions unless it exists."""
    server = server_name(node)
    return (f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_foreign_server "
            f"WHERE srvname = {quote_literal(server)}) THEN CREATE SERVER {quote_ident(server)} "
            f"FOREIGN DATA WRAPPER shoal_fdw OPTIONS (node {quote_literal(node)}); END IF; END $$")


def sequences_for(rel: Relation, table: tabledef.TableDef, cluster: list[NodeInfo],
                  statements: dict[str, list]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Make the table's sequences hand out values no other node hands out: node k's values are
    k modulo 1024.  Returns each node's identity options and what to run here at the end."""
    me = catalog.this_node()
    identity: dict[str, dict[str, str]] = defaultdict(dict)
    restarts: list[str] = []
    for column, sequence in table.identity_sequences.items():
        base = _next_base(sequence)
        for node in cluster:
            identity[node.name][column] = f"INCREMENT BY {SEQUENCE_STRIDE} START WITH {base + node.id}"
    for sequence in table.sequences.values():
        base = _next_base(sequence)
        for node in cluster:
            start = base + node.id
            if node.name == me:
                restarts.append(
                    f"ALTER SEQUENCE {sequence} INCREMENT BY {SEQUENCE_STRIDE} RESTART WITH {start}")
            else:
                statements[node.name].append(
                    f"CREATE SEQUENCE {sequence} INCREMENT BY {SEQUENCE_STRIDE} START WITH {start}")
    return identity, restarts


def global_copy(rel: Relation, table: tabledef.TableDef, node: str, identity: dict[str, dict[str, str]],
                rows: str | None) -> list:
    """A copy of global table ``rel`` on another node: the table, its indexes, ``rows`` (a text[]
    literal of row values) and its sequences (``identity``: each node's identity options)."""
    statements: list = [table.create_sql(rel.sql, "", identity.get(node), with_uniques=True)]
    statements += own_sequences(rel, table, node)
    statements += table.indexes + [definition for definition, _ in table.unique_indexes]
    if rows is not None:
        statements.append((replicate.insert_sql(rel, table), [rows]))
    return statements


def catalog_rows(rel: Relation, column: str | None = None, partitions: int | None = None,
                 colocation: int | None = None, parts: list[tuple[int, str, str]] | None = None) -> list:
    """The catalog rows of a shoal table: global without ``column``, else distributed by it with
    ``parts`` (part, partition table, node)."""
    if column is None:
        return [("INSERT INTO shoal.distributed VALUES ($1::regclass, 'global', NULL, NULL, NULL)",
                 [rel.sql])]
    parts_sql = ", ".join(
        f"({quote_literal(rel.sql)}::regclass, {part}, {quote_literal(partition)}, {quote_literal(node)})"
        for part, partition, node in parts or [])
    return [
        ("INSERT INTO shoal.distributed VALUES ($1::regclass, 'hash', $2, $3::int, $4::int)",
         [rel.sql, column, str(partitions), str(colocation)]),
        f"INSERT INTO shoal.placement VALUES {parts_sql}",
    ]


def foreign_partition_sql(rel: Relation, partition: str, bound: str, node: str) -> str:
    """A partition of ``rel`` held by ``node``, as the other nodes declare it."""
    return (f"CREATE FOREIGN TABLE {quote_ident(rel.schema)}.{quote_ident(partition)} PARTITION OF {rel.sql} "
            f"{bound} SERVER {quote_ident(server_name(node))} OPTIONS (schema_name "
            f"{quote_literal(rel.schema)}, table_name {quote_literal(partition)})")


def _on_partition(index_definition: str, partition: str) -> str:
    """A table's CREATE UNIQUE INDEX, for one of its partitions (named by PostgreSQL)."""
    _, using = index_definition.split(" USING ", 1)
    return f"CREATE UNIQUE INDEX ON {partition} USING {using}"


def own_sequences(rel: Relation, table: tabledef.TableDef, node: str) -> list[str]:
    """On the other nodes, the table owns the sequences created for it (dropped with it)."""
    if node == catalog.this_node():
        return []
    return [f"ALTER SEQUENCE {sequence} OWNED BY {rel.sql}.{quote_ident(column)}"
            for column, sequence in table.sequences.items()]


def _next_base(sequence: str) -> int:
    last = backend.query(f"SELECT last_value FROM {sequence}")[0][0]
    return (int(last) // SEQUENCE_STRIDE + 1) * SEQUENCE_STRIDE


def _retire(rel: Relation) -> str:
    """Rename the table out of the way (its rows move to the new one); returns its new name."""
    temp = f"{rel.name[:50]}_shoal_old"
    backend.query(f"ALTER TABLE {rel.sql} RENAME TO {quote_ident(temp)}")
    return f"{quote_ident(rel.schema)}.{quote_ident(temp)}"


def _move_rows(rel: Relation, old: str, table: tabledef.TableDef) -> None:
    columns = ", ".join(quote_ident(c) for c in table.column_names(insertable=True))
    backend.query(f"INSERT INTO {rel.sql} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {old}")
    for column, sequence in table.sequences.items():
        # the old table owns it: hand it over before the old table goes
        backend.query(f"ALTER SEQUENCE {sequence} OWNED BY {rel.sql}.{quote_ident(column)}")
    backend.query(f"DROP TABLE {old}")


def ship_triggers(rel: Relation) -> list[str]:
    return [
        f"CREATE TRIGGER shoal_ship_inserted AFTER INSERT ON {rel.sql} REFERENCING NEW TABLE AS shoal_new "
        f"FOR EACH STATEMENT EXECUTE FUNCTION shoal._ship_inserted()",
        f"CREATE TRIGGER shoal_ship_updated AFTER UPDATE ON {rel.sql} REFERENCING OLD TABLE AS shoal_old "
        f"NEW TABLE AS shoal_new FOR EACH STATEMENT EXECUTE FUNCTION shoal._ship_updated()",
        f"CREATE TRIGGER shoal_ship_deleted AFTER DELETE ON {rel.sql} REFERENCING OLD TABLE AS shoal_old "
        f"FOR EACH STATEMENT EXECUTE FUNCTION shoal._ship_deleted()",
    ]


def sync_privileges(oid: int) -> None:
    """Give this node's partitions of a distributed table the privileges of the table itself: the
    other nodes' workers read and write a partition directly, as the role that ran the query."""
    rel = catalog.relation(oid)
    wanted = catalog.grants(rel.sql)
    for _, name, _ in catalog.placement(oid):
        partition = f"{quote_ident(rel.schema)}.{quote_ident(name)}"
        for role in {grant.role for grant in catalog.grants(partition)}:
            backend.query(f"REVOKE ALL ON {partition} FROM {catalog.role_sql(role)}")
        for grant in wanted:
            backend.query(grant.grant_sql(partition))
