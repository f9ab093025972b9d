"""The cluster catalog (tables shoal.node, shoal.distributed, shoal.placement), as this node sees it."""

from __future__ import annotations

from dataclasses import dataclass

from shoal.errors import SqlError
from shoal.fdw import backend


@dataclass(frozen=True)
class NodeInfo:
    name: str
    id: int


@dataclass(frozen=True)
class Relation:
    """A table of this node: its oid and its names, quoted for SQL."""

    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind

    @property
    def sql(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass(frozen=True)
class ShoalTable:
    """A distributed (kind 'hash') or global table, from shoal.distributed."""

    relation: Relation
    kind: str
    column: str | None
    num_parts: int | None
    colocation: int | None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def this_node() -> str:
    name = backend.setting("shoal.node_name")
    if not name:
        raise SqlError("this server is not a shoal node: shoal.node_name is not set",
                       hint="Start the cluster with `shoal up`.", sqlstate="55000")
    return name


def nodes() -> list[NodeInfo]:
    """Every node of the cluster, in id order."""
    return [NodeInfo(name, node_id) for name, node_id in
            backend.query("SELECT name, id FROM shoal.nodes ORDER BY id")]


def relation(oid: int) -> Relation:
    rows = backend.query(
        "SELECT n.nspname, c.relname, c.relkind::text FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::oid", oid)
    if not rows:
        raise SqlError(f"relation with OID {oid} does not exist", sqlstate="42P01")
    schema, name, kind = rows[0]
    return Relation(oid, schema, name, kind)


def lookup(schema: str | None, name: str) -> int | None:
    """The oid of a table named as in SQL (schema optional: the search path decides), or None."""
    qualified = f"{quote_ident(schema)}.{quote_ident(name)}" if schema else quote_ident(name)
    rows = backend.query("SELECT to_regclass($1)::oid", qualified)
    return rows[0][0] if rows and rows[0][0] is not None else None


def shoal_table(oid: int) -> ShoalTable | None:
    rows = backend.query(
        "SELECT kind, column_name::text, num_parts, colocation FROM shoal.distributed "
        "WHERE relation = $1::oid", oid)
    if not rows:
        return None
    kind, column, num_parts, colocation = rows[0]
    return ShoalTable(relation(oid), kind, column, num_parts, colocation)


@dataclass(frozen=True)
class Grant:
    """A privilege on a table, granted to a role other than its owner (``role`` None: PUBLIC)."""

    role: str | None
    privilege: str
    grantable: bool

    def grant_sql(self, table_sql: str) -> str:
        option = " WITH GRANT OPTION" if self.grantable else ""
        return f"GRANT {self.privilege} ON {table_sql} TO {role_sql(self.role)}{option}"


def role_sql(role: str | None) -> str:
    return "PUBLIC" if role is None else quote_ident(role)


def grants(table: str) -> list[Grant]:
    """The privileges on ``table`` (its name as SQL) held by others than its owner."""
    return [Grant(*row) for row in backend.query(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE r.rolname::text END, a.privilege_type, a.is_grantable "
        "FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) a "
        "LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee "
        "WHERE c.oid = $1::regclass AND a.grantee <> c.relowner", table)]


def placement(oid: int) -> list[tuple[int, str, str]]:
    """(part, partition name, node) of a distributed table, by part."""
    return [tuple(r) for r in backend.query(
        "SELECT part, partition_name::text, node FROM shoal.placement WHERE relation = $1::oid "
        "ORDER BY part", oid)]
