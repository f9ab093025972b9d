"""Moving a partition of a distributed table to another node (rebalancing, emptying a node).

``shoal.move_partition(partition, node)`` moves the partition, and the partitions of the same
number of every table co-located with it, in the caller's transaction, committed on every node
together (two-phase commit):

1. every node locks the tables of the co-location group in EXCLUSIVE mode: writers wait (on the
   node where they run, before they send anything), readers go on, and the rows cannot change
   while they are copied;
2. the new node replaces its foreign partition by a plain table: PARTITION OF gives it the
   parent's columns, defaults and indexes; its own unique keys, the constraints and indexes it
   had on the old node (PostgreSQL allows no unique index on a parent with foreign partitions),
   come from the old node's definitions, and its owner and privileges from the parent;
3. the rows travel from the old node to the new one in batches of heap pages (TID range scans),
   through this node, as row values in text (exact for every type);
4. every other node, the old one too, replaces its partition by a foreign partition on the new
   node, and the catalog says where the partition is now;
5. the foreign keys the partitions had on the old node (shoal.sharding.foreign_keys) are made
   again on the new one, once every row is there.

Writers of the group wait for the whole move: it is an offline move of one partition at a time.
"""

from __future__ import annotations

from shoal.errors import InvalidParameter, SqlError, UndefinedObject
from shoal.fdw import backend
from shoal.sharding import catalog, distribute, everywhere, foreign_keys, replicate, tabledef
from shoal.sharding.catalog import Relation, quote_ident, quote_literal

BATCH_PAGES = 128  # 1 MB of heap per message: far below the multiplexer's frame limit


def move_partition(partition_oid: int, node: str) -> int:
    """Move ``partition`` (and its co-located partitions) to ``node``; returns the rows moved."""
    if node not in {n.name for n in catalog.nodes()}:
        raise UndefinedObject(f'node "{node}" does not exist', hint="See shoal.nodes.")
    table_oid, part = _placement_of(partition_oid)
    group = _colocated(table_oid, part)
    source = group[0][2]
    if source == node:
        backend.log("notice", f'partition {catalog.relation(partition_oid).name} is on node "{node}" already')
        return 0
    others = [n.name for n in catalog.nodes() if n.name not in (source, node)]
    everywhere.run({n.name: [f"LOCK TABLE {rel.sql} IN EXCLUSIVE MODE" for rel, _, _ in group]
                    for n in catalog.nodes()})
    # the foreign keys between them (and to global tables) go along once all the rows are there
    keys = [key for rel, partition, _ in group
            for key in foreign_keys.of_table(source, Relation(0, rel.schema, partition, "r").sql)]
    if keys:
        everywhere.run({source: [drop for drop, _ in keys]})
    moved = 0
    for rel, partition, _ in group:
        shoal_table = catalog.shoal_table(rel.oid)
        assert shoal_table is not None
        target = Relation(0, rel.schema, partition, "r")
        bound = f"FOR VALUES WITH (MODULUS {shoal_table.num_parts}, REMAINDER {part})"
        everywhere.run({node: [f"DROP FOREIGN TABLE {target.sql}",
                               f"CREATE TABLE {target.sql} PARTITION OF {rel.sql} {bound}",
                               *_own_keys(source, target), *_owner_and_grants(rel, target)]})
        moved += _copy_rows(rel, target, source, node)
        # a node that joined later has no foreign server on the other nodes yet
        foreign = [distribute.server_sql(node), distribute.foreign_partition_sql(rel, partition, bound, node),
                   *_owner_and_grants(rel, target, "FOREIGN TABLE")]
        everywhere.run({source: [f"DROP TABLE {target.sql}", *foreign],
                        **{n: [f"DROP FOREIGN TABLE {target.sql}", *foreign] for n in others}})
        everywhere.run({n.name: [("UPDATE shoal.placement SET node = $1 WHERE relation = $2::regclass "
                                  "AND part = $3::int", [node, rel.sql, str(part)])]
                        for n in catalog.nodes()})
    if keys:
        everywhere.run({node: [add for _, add in keys]})
    return moved


def _placement_of(partition_oid: int) -> tuple[int, int]:
    """The distributed table and the partition number of a partition."""
    rel = catalog.relation(partition_oid)
    rows = backend.query(
        "SELECT p.relation::oid, p.part FROM shoal.placement p JOIN pg_catalog.pg_inherits i "
        "ON i.inhparent = p.relation AND i.inhrelid = $1::oid WHERE p.partition_name = $2",
        partition_oid, rel.name)
    if not rows:
        raise InvalidParameter(f'"{rel.name}" is not a partition of a distributed table',
                               hint="See shoal.partitions.")
    return rows[0][0], rows[0][1]


def _colocated(table_oid: int, part: int) -> list[tuple[Relation, str, str]]:
    """(table, partition name, node) of partition ``part`` of every table co-located with the
    table (itself included), in a fixed order: every node locks them in that order."""
    rows = backend.query(
        "SELECT p.relation::oid, p.partition_name::text, p.node FROM shoal.placement p "
        "JOIN shoal.distributed d ON d.relation = p.relation "
        "WHERE p.part = $2::int AND d.colocation = (SELECT colocation FROM shoal.distributed "
        "WHERE relation = $1::oid) ORDER BY p.relation::oid", table_oid, part)
    group = [(catalog.relation(oid), partition, node) for oid, partition, node in rows]
    if len({node for _, _, node in group}) != 1:
        raise SqlError("the co-located tables do not have the same placement", sqlstate="XX000")
    return group


def _own_keys(source: str, target: Relation) -> list[str]:
    """The constraints and indexes the partition has of its own on the old node (unique keys,
    mostly), to create on the new one."""
    constraints = everywhere.rows(
        source, "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
        "WHERE conrelid = $1::regclass AND conparentid = 0 AND coninhcount = 0 "
        "AND contype IN ('p', 'u', 'x', 'c') ORDER BY oid", [target.sql])
    indexes = everywhere.rows(
        source, "SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i "
        "WHERE i.indrelid = $1::regclass "
        "AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid) "
        "AND NOT EXISTS (SELECT FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid) "
        "ORDER BY i.indexrelid", [target.sql])
    return ([f"ALTER TABLE {target.sql} ADD CONSTRAINT {quote_ident(name)} {definition}"
             for name, definition in constraints] + [definition for (definition,) in indexes])


def _owner_and_grants(rel: Relation, target: Relation, kind: str = "TABLE") -> list:
    """The partition takes the owner and the privileges the table has on the node where it runs
    (a role made where role DDL is not shared may exist on some nodes only).  The workers of other
    nodes read and write a plain partition directly, as the querying role."""
    owner = (f"DO $shoal_move$ BEGIN EXECUTE pg_catalog.format('ALTER {kind} %s OWNER TO %I', "
             f"{quote_literal(target.sql)}, (SELECT pg_catalog.pg_get_userbyid(relowner) "
             f"FROM pg_catalog.pg_class WHERE oid = {quote_literal(rel.sql)}::regclass)); END $shoal_move$")
    return [owner, ("SELECT shoal._sync_privileges($1::regclass)", [rel.sql])]


def _copy_rows(rel: Relation, target: Relation, source: str, node: str) -> int:
    """Copy the partition's rows from ``source`` to ``node``, a batch of heap pages at a time."""
    table = tabledef.read(rel.oid)
    (pages,) = everywhere.rows(
        source, "SELECT (pg_catalog.pg_relation_size($1::regclass) / "
        "pg_catalog.current_setting('block_size')::int)::text", [target.sql])[0]
    insert = replicate.insert_sql(target, table)
    copied = 0
    for first in range(0, int(pages), BATCH_PAGES):
        last = first + BATCH_PAGES
        upper = f" AND t.ctid < {quote_literal(f'({last},0)')}::tid" if last < int(pages) else ""
        count, values = everywhere.rows(
            source, f"SELECT pg_catalog.count(*)::text, pg_catalog.array_agg(t::text)::text "
            f"FROM {target.sql} t WHERE t.ctid >= {quote_literal(f'({first},0)')}::tid{upper}")[0]
        if values is not None:
            everywhere.run({node: [(insert, [values])]})
            copied += int(count)
    return copied
