"""Foreign keys on distributed and global tables, kept where the rows are.

PostgreSQL allows no foreign key on a partitioned table that has foreign partitions, and none that
references one (such a table has no unique index of its own).  shoal puts each foreign key on the
tables that hold the rows, so that both sides of it are on one node and PostgreSQL checks it there,
with its own locks, for every write from any node (a write to a remote partition runs on its node):

- a distributed table referencing a distributed table co-located with it, their distribution
  columns paired in the key: partition p references partition p, which the same hash puts on the
  same node;
- a distributed table referencing a global table: each partition references the copy of its node;
- a global table referencing a global table: every copy references the copy of its node.

``ALTER TABLE ... ADD [CONSTRAINT name] FOREIGN KEY``, or a FOREIGN KEY or REFERENCES clause of the
CREATE TABLE that distributes a table or makes it global (taken out of the statement, and added once
the table is shoal's), creates the constraint, under one name, on each partition (or copy), on every
node in one transaction; ``ALTER TABLE ... DROP CONSTRAINT name`` drops it there.  A moved
partition takes its constraints along (shoal.sharding.move).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from shoal.errors import FeatureNotSupported, SqlError
from shoal.fdw import backend
from shoal.sharding import catalog, everywhere
from shoal.sharding.catalog import ShoalTable, quote_ident

_MATCH = {"f": " MATCH FULL", "p": " MATCH PARTIAL", "s": ""}
_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def add(keys: list[dict[str, Any]], child: ShoalTable) -> None:
    """Create foreign keys of ``child`` (FOREIGN KEY clauses as the extension describes them) on
    the tables holding its rows."""
    per_node: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        _place(key, child, per_node)
    everywhere.run(per_node)


def drop(info: dict[str, Any], child: ShoalTable) -> bool:
    """Drop from a distributed table's partitions the foreign keys its ALTER TABLE drops; False if
    the constraints it names are the table's own (PostgreSQL's business)."""
    names = [name for name, _ in info["dropped_constraints"]]
    own = {row[0] for row in backend.query(
        "SELECT conname::text FROM pg_catalog.pg_constraint WHERE conrelid = $1::oid", child.relation.oid)}
    if all(name in own for name in names):
        return False
    if not info["only_dropped_constraints"] or any(name in own for name in names):
        raise FeatureNotSupported(
            f'drop the foreign keys of "{child.relation.name}" in an ALTER TABLE of their own')
    placement = catalog.placement(child.relation.oid)
    _, first, holder = placement[0]
    held = {row[0] for row in everywhere.rows(
        holder, "SELECT conname::text FROM pg_catalog.pg_constraint "
                "WHERE conrelid = $1::regclass AND contype = 'f'", [_qualified(child, first)])}
    per_node: dict[str, list[str]] = defaultdict(list)
    for name, if_exists in info["dropped_constraints"]:
        if name not in held:
            if if_exists:
                continue
            raise SqlError(f'constraint "{name}" of relation "{child.relation.name}" does not exist',
                           sqlstate="42704")
        for _, partition, node in placement:
            per_node[node].append(f"ALTER TABLE {_qualified(child, partition)} "
                                  f"DROP CONSTRAINT {quote_ident(name)}")
    everywhere.run(per_node)
    return True


def of_table(node: str, table: str) -> list[tuple[str, str]]:
    """The foreign keys of a partition or a global copy (``table``, schema-qualified SQL) on
    ``node``, to make again on another node: (DROP, ADD) statement pairs, the ADD naming every
    table with its schema (search paths differ)."""
    found = []
    for (row,) in everywhere.rows(node, _KEYS_SQL, [table]):
        key = json.loads(row)
        ref = f"{quote_ident(key['ref_schema'])}.{quote_ident(key['ref_name'])}"
        found.append((_drop_sql(table, key), _constraint_sql(table, key, ref)))
    return found


def take_off(table: str) -> list[dict[str, Any]]:
    """Drop the foreign keys of a plain table of this node about to become a shoal table, and
    return them as add() takes them, to be made again once it is."""
    keys = [json.loads(row) for (row,) in backend.query(_KEYS_SQL, table)]
    for key in keys:
        backend.query(_drop_sql(table, key))
    return keys


def _drop_sql(table: str, key: dict[str, Any]) -> str:
    return f"ALTER TABLE {table} DROP CONSTRAINT {quote_ident(key['name'])}"


# a table's foreign keys, each as the JSON of the parts _constraint_sql needs
_KEYS_SQL = (
    "SELECT pg_catalog.json_build_object('name', c.conname, 'ref_schema', fn.nspname, 'ref_name', f.relname, "
    "'columns', ARRAY(SELECT a.attname FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY k(n, i) "
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), "
    "'ref_columns', ARRAY(SELECT a.attname FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY k(n, i) "
    "  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), "
    "'on_delete_columns', ARRAY(SELECT a.attname FROM pg_catalog.unnest(c.confdelsetcols) WITH ORDINALITY "
    "  k(n, i) JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), "
    "'match', c.confmatchtype, 'on_update', c.confupdtype, 'on_delete', c.confdeltype, "
    "'deferrable', c.condeferrable, 'initially_deferred', c.condeferred, "
    "'not_valid', NOT c.convalidated)::text "
    "FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class f ON f.oid = c.confrelid "
    "JOIN pg_catalog.pg_namespace fn ON fn.oid = f.relnamespace "
    "WHERE c.conrelid = $1::regclass AND c.contype = 'f' ORDER BY c.oid")


def _place(key: dict[str, Any], child: ShoalTable, per_node: dict[str, list[str]]) -> None:
    ref_oid = catalog.lookup(key["ref_schema"], key["ref_name"])
    if ref_oid is None:
        raise SqlError(f'relation "{key["ref_name"]}" does not exist', sqlstate="42P01")
    parent = catalog.shoal_table(ref_oid)
    name = key["name"] or _default_name(child, key["columns"])
    if parent is None:
        raise FeatureNotSupported(
            f'foreign key "{name}": "{child.relation.name}" can reference only a global table, or a '
            f'distributed table co-located with it; "{key["ref_name"]}" is neither',
            hint="Make it global (shoal.create_global_table), or distribute it co-located.")
    nodes = [node.name for node in catalog.nodes()]
    if parent.kind == "global":
        if child.kind == "global":
            for node in nodes:
                per_node[node].append(_add_sql(child, child.relation.name, name, key, parent,
                                               parent.relation.name))
        else:
            for _, partition, node in catalog.placement(child.relation.oid):
                per_node[node].append(_add_sql(child, partition, name, key, parent, parent.relation.name))
        return
    if child.kind != "hash" or child.colocation != parent.colocation:
        raise FeatureNotSupported(
            f'foreign key "{name}": distributed table "{parent.relation.name}" can be referenced only by a '
            "distributed table co-located with it, whose rows are on the same nodes",
            hint="Distribute the referencing table with colocate_with, or make the referenced one global.")
    ref_columns = key["ref_columns"] or _primary_key(parent)
    if len(ref_columns) != len(key["columns"]):
        raise SqlError("number of referencing and referenced columns for foreign key disagree",
                       sqlstate="42830")
    pairs = list(zip(key["columns"], ref_columns, strict=True))
    if (child.column, parent.column) not in pairs or _type(child) != _type(parent):
        raise FeatureNotSupported(
            f'foreign key "{name}" must pair the distribution columns ("{child.column}" references '
            f'"{parent.column}", of the same type): then a row and the row it references have the same '
            "hash, and are in partitions of the same number, on the same node")
    theirs = {part: partition for part, partition, _ in catalog.placement(parent.relation.oid)}
    keyed = {**key, "ref_columns": ref_columns}
    for part, partition, node in catalog.placement(child.relation.oid):
        per_node[node].append(_add_sql(child, partition, name, keyed, parent, theirs[part]))


def _add_sql(child: ShoalTable, table: str, name: str, key: dict[str, Any], parent: ShoalTable,
             referenced: str) -> str:
    return _constraint_sql(_qualified(child, table), {**key, "name": name}, _qualified(parent, referenced))


def _constraint_sql(table: str, key: dict[str, Any], referenced: str) -> str:
    """ALTER TABLE ... ADD CONSTRAINT for a foreign key described by its parts (as the extension
    describes the clause, or as _KEYS_SQL reads a constraint)."""
    columns = ", ".join(quote_ident(c) for c in key["columns"])
    ref_columns = ", ".join(quote_ident(c) for c in key["ref_columns"])
    sql = (f"ALTER TABLE {table} ADD CONSTRAINT {quote_ident(key['name'])} FOREIGN KEY "
           f"({columns}) REFERENCES {referenced}"
           + (f" ({ref_columns})" if ref_columns else "") + _MATCH[key["match"]]
           + f" ON UPDATE {_ACTIONS[key['on_update']]} ON DELETE {_ACTIONS[key['on_delete']]}")
    if key["on_delete_columns"]:
        sql += " (" + ", ".join(quote_ident(c) for c in key["on_delete_columns"]) + ")"
    if key["deferrable"]:
        sql += " DEFERRABLE" + (" INITIALLY DEFERRED" if key["initially_deferred"] else "")
    return sql + (" NOT VALID" if key["not_valid"] else "")


def _qualified(table: ShoalTable, name: str) -> str:
    return f"{quote_ident(table.relation.schema)}.{quote_ident(name)}"


def _default_name(child: ShoalTable, columns: list[str]) -> str:
    """PostgreSQL's choice for the parent, the same on every partition."""
    return f"{child.relation.name}_{'_'.join(columns)}_fkey"[:63]


def _type(table: ShoalTable) -> str:
    return backend.query(
        "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
        "WHERE attrelid = $1::oid AND attname = $2", table.relation.oid, table.column)[0][0]


def _primary_key(parent: ShoalTable) -> list[str]:
    """The columns of a distributed table's primary key, which its partitions hold."""
    _, partition, node = catalog.placement(parent.relation.oid)[0]
    rows = everywhere.rows(
        node, "SELECT a.attname::text FROM pg_catalog.pg_constraint c "
              "CROSS JOIN LATERAL pg_catalog.unnest(c.conkey) WITH ORDINALITY k(attnum, i) "
              "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
              "WHERE c.conrelid = $1::regclass AND c.contype = 'p' ORDER BY k.i",
        [_qualified(parent, partition)])
    if not rows:
        raise SqlError(f'there is no primary key for referenced table "{parent.relation.name}"',
                       sqlstate="42830")
    return [row[0] for row in rows]
