"""A table's definition as SQL, to create the same table on other nodes.

Names come out schema-qualified (the catalog is read with an empty search path), so the statements
mean the same thing on every node whatever its search path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from shoal.fdw import backend
from shoal.sharding.catalog import quote_ident


@dataclass
class Column:
    name: str
    type_sql: str
    not_null: bool
    default: str | None  # an expression, or None
    generated: str | None  # the expression of a stored generated column
    identity: str  # '', 'a' (always) or 'd' (by default)
    collation: str | None  # non-default collation, qualified

    def sql(self, identity_options: str = "") -> str:
        text = f"{quote_ident(self.name)} {self.type_sql}"
        if self.collation:
            text += f" COLLATE {self.collation}"
        if self.generated is not None:
            text += f" GENERATED ALWAYS AS ({self.generated}) STORED"
        elif self.identity:
            kind = "ALWAYS" if self.identity == "a" else "BY DEFAULT"
            text += f" GENERATED {kind} AS IDENTITY"
            if identity_options:
                text += f" ({identity_options})"
        elif self.default is not None:
            text += f" DEFAULT {self.default}"
        if self.not_null:
            text += " NOT NULL"
        return text


@dataclass
class TableDef:
    columns: list[Column]
    checks: list[str] = field(default_factory=list)  # CONSTRAINT name CHECK (...)
    uniques: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (name, definition, columns)
    indexes: list[str] = field(default_factory=list)  # CREATE INDEX statements (not of constraints)
    unique_indexes: list[tuple[str, list[str]]] = field(default_factory=list)  # (CREATE UNIQUE INDEX, keys)
    foreign_keys: list[str] = field(default_factory=list)  # names
    referenced_by: list[str] = field(default_factory=list)  # tables with foreign keys to this one
    sequences: dict[str, str] = field(default_factory=dict)  # column -> sequence it takes defaults from
    identity_sequences: dict[str, str] = field(default_factory=dict)  # column -> its identity sequence

    def column_names(self, insertable: bool = False) -> list[str]:
        return [c.name for c in self.columns if not (insertable and c.generated is not None)]

    def create_sql(self, table_sql: str, suffix: str = "", identity_options: dict[str, str] | None = None,
                   with_uniques: bool = False) -> str:
        identity_options = identity_options or {}
        items = [c.sql(identity_options.get(c.name, "")) for c in self.columns] + list(self.checks)
        if with_uniques:
            items += [f"CONSTRAINT {quote_ident(name)} {definition}" for name, definition, _ in self.uniques]
        return f"CREATE TABLE {table_sql} ({', '.join(items)}){suffix}"


@contextmanager
def qualified_names() -> Iterator[None]:
    """Deparse with an empty search path: every name comes out qualified."""
    old = backend.query("SELECT pg_catalog.current_setting('search_path')")[0][0]
    backend.query("SELECT pg_catalog.set_config('search_path', '', true)")
    try:
        yield
    finally:
        backend.query("SELECT pg_catalog.set_config('search_path', $1, true)", old)


def read(oid: int) -> TableDef:
    with qualified_names():
        return _read(oid)


def _read(oid: int) -> TableDef:
    columns = [
        Column(name, type_sql, not_null, default if not generated else None,
               default if generated else None, identity, collation)
        for name, type_sql, not_null, default, generated, identity, collation in backend.query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "  pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> '', a.attidentity::text, "
            "  CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0 THEN "
            "    pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) END "
            "FROM pg_catalog.pg_attribute a "
            "JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation "
            "LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace "
            "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", oid)
    ]
    table = TableDef(columns)
    for name, contype, definition, keys in backend.query(
            "SELECT c.conname::text, c.contype::text, pg_catalog.pg_get_constraintdef(c.oid), "
            "  ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a "
            "        WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) ORDER BY a.attnum) "
            "FROM pg_catalog.pg_constraint c WHERE c.conrelid = $1::oid ORDER BY c.conname", oid):
        if contype == "c":
            table.checks.append(f"CONSTRAINT {quote_ident(name)} {definition}")
        elif contype in ("p", "u", "x"):
            table.uniques.append((name, definition, list(keys or [])))
        elif contype == "f":
            table.foreign_keys.append(name)
    table.referenced_by = [r[0] for r in backend.query(
        "SELECT c.conrelid::regclass::text FROM pg_catalog.pg_constraint c "
        "WHERE c.confrelid = $1::oid AND c.contype = 'f' AND c.conrelid <> $1::oid", oid)]
    for definition, unique, keys in backend.query(
            "SELECT pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique, "
            "  ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a "
            "        WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])) "
            "FROM pg_catalog.pg_index i "
            "WHERE i.indrelid = $1::oid AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c "
            "  WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid) ORDER BY i.indexrelid", oid):
        if unique:
            table.unique_indexes.append((definition, list(keys or [])))
        else:
            table.indexes.append(definition)
    for column, sequence, deptype in backend.query(
            "SELECT a.attname::text, s.oid::regclass::text, d.deptype::text FROM pg_catalog.pg_depend d "
            "JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refobjid = $1::oid "
            "AND d.deptype IN ('a', 'i')", oid):
        if deptype == "i":
            table.identity_sequences[column] = sequence
        else:
            table.sequences[column] = sequence
    return table
