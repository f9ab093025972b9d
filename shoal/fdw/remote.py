"""shoal's own handler: a partition (or any table) that lives on another shoal node.

The server names the node (``OPTIONS (node 'n2')``, a name in ``shoal.nodes``); the table may name
the remote ``schema_name`` and ``table_name`` (default: the local ones), and a column its remote
``column_name``.  Every shippable qual, the sort and the limit are pushed down, and rows come back
as binary COPY data for the extension's fast path: local column types must match the remote ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shoal.fdw import backend
from shoal.fdw.convert import to_text
from shoal.fdw.handler import ForeignDataWrapper
from shoal.fdw.peer import Peer, RemoteStream, existing_peer, peer
from shoal.fdw.quals import ColumnDefinition, Quals, SortKey
from shoal.planner import remote_sql

_SHIPPABLE_COLLATIONS = (None, "default", "C", "POSIX")
_type_names: dict[int, str] = {}


class RemotePartition(ForeignDataWrapper):
    """Reads and inserts rows of a table on another shoal node."""

    exact_quals = True
    batch_size = 200

    def __init__(self, options: dict[str, str], columns: dict[str, ColumnDefinition]) -> None:
        super().__init__(options, columns)
        self.node = options.get("node")
        self._remote_name = {name: col.options.get("column_name", name) for name, col in columns.items()}
        # Deparsed quals name the local columns: with renamed columns they stay local hints.
        if any(name != remote for name, remote in self._remote_name.items()):
            self.exact_quals = False
        self._table: str | None = None
        self._serializable = False
        self._rows_estimate: float | None = None
        self._pending: list[dict[str, Any]] = []

    # -- where the table is -------------------------------------------------------------------

    def _peer(self) -> Peer:
        if not self.node:
            raise ValueError(
                "this foreign table's server names no node: add OPTIONS (node '...'), "
                "or a wrapper option for a Python handler"
            )
        return peer(self.node)

    def _table_sql(self) -> str:
        if self._table is None:
            schema, table = self.options.get("schema_name"), self.options.get("table_name")
            if schema is None or table is None:
                rows = backend.query(
                    "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::oid",
                    self.relid,
                )
                local_schema, local_table = rows[0]
                schema, table = schema or local_schema, table or local_table
            self._table = remote_sql.qualified_name(schema, table)
        return self._table

    def _remote_columns(self, columns: list[str]) -> list[str]:
        return [self._remote_name[c] for c in columns]

    def _remote_sortkeys(self, sortkeys: list[SortKey] | None) -> list[SortKey] | None:
        if not sortkeys:
            return None
        return [
            SortKey(self._remote_name[k.attname], k.attnum, k.is_reversed, k.nulls_first, k.collate)
            for k in sortkeys
        ]

    def _select(
        self, quals: Quals, columns: list[str], sortkeys: list[SortKey] | None, limit: int | None
    ) -> str:
        if not self.exact_quals:
            quals = Quals()
        return remote_sql.select_sql(
            self._table_sql(), self._remote_columns(columns), quals, self._remote_sortkeys(sortkeys), limit
        )

    # -- planning -----------------------------------------------------------------------------

    def get_rel_size(self, quals: Quals, columns: list[str]) -> tuple[float, int]:
        if self._rows_estimate is None:
            rows = self._peer().execute(
                "SELECT greatest(c.reltuples, 0) FROM pg_catalog.pg_class c WHERE c.oid = %s::regclass",
                (self._table_sql(),),
            )
            self._rows_estimate = float(rows[0][0]) if rows and rows[0][0] else 1000.0
        rows = self._rows_estimate
        for qual in quals:
            if qual.operator == "=" and qual.value is not None:  # a ParamValue counts: a lookup
                rows *= 0.005
            elif qual.field_name is not None:
                rows *= 0.33
        return max(rows, 1.0), 32 * max(len(columns), 1)

    def can_sort(self, sortkeys: list[SortKey]) -> list[SortKey]:
        granted = []
        for key in sortkeys:
            if key.collate not in _SHIPPABLE_COLLATIONS:
                break
            granted.append(key)
        return granted

    def can_limit(self, limit: int | None, offset: int | None) -> bool:
        return True

    # -- scans --------------------------------------------------------------------------------

    def execute(
        self,
        quals: Quals,
        columns: list[str],
        sortkeys: list[SortKey] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Iterator[bytes | memoryview]:
        node = self._peer()
        node.ensure(self._serializable)
        self._flush()
        sql = remote_sql.bind_params(
            self._select(quals, columns, sortkeys, limit),
            quals.params,
            lambda i, value: _literal(value, quals.param_types[i - 1]),
        )
        return _read(node.stream(sql))

    def explain(self, quals, columns, sortkeys=None, limit=None, offset=None, verbose=False):
        return {"Node": self.node or "", "Remote SQL": self._select(quals, columns, sortkeys, limit)}

    # -- writes -------------------------------------------------------------------------------

    def insert(self, values: dict[str, Any]) -> dict[str, Any]:
        node = self._peer()
        node.ensure(self._serializable)
        self._flush()
        names = list(values)
        everything = list(self.columns)
        sql = remote_sql.insert_sql(
            self._table_sql(), self._remote_columns(names), returning=self._remote_columns(everything)
        )
        row = node.execute(sql, self._as_text(values, names))[0]
        return dict(zip(everything, row, strict=True))

    def _as_text(self, values: dict[str, Any], names: list[str]) -> list[str | None]:
        """Values in their types' input syntax: the remote parses them as the local server would."""
        return [
            None if values[n] is None else to_text(values[n], self.columns[n].type_oid) for n in names
        ]

    def bulk_insert(self, rows: list[dict[str, Any]]) -> None:
        self._pending.extend(rows)
        if len(self._pending) >= 10 * self.batch_size:
            self._flush()

    def end_modify(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        node = self._peer()
        node.ensure(self._serializable)
        node.settle()
        names = list(rows[0])
        with node._guard(), node.conn.cursor() as cur:
            with cur.copy(remote_sql.copy_from_sql(self._table_sql(), self._remote_columns(names))) as copy:
                for row in rows:
                    copy.write_row(self._as_text(row, names))

    # -- transactions -------------------------------------------------------------------------

    def begin(self, serializable: bool) -> None:
        self._serializable = serializable

    def pre_commit(self) -> None:
        self._flush()
        existing = existing_peer(self.node) if self.node else None
        if existing is not None:
            existing.commit()

    def rollback(self) -> None:
        self._pending = []
        existing = existing_peer(self.node) if self.node else None
        if existing is not None:
            existing.rollback()

    def sub_commit(self, level: int) -> None:
        self._flush()
        existing = existing_peer(self.node) if self.node else None
        if existing is not None and not existing.broken:
            existing.release(level)

    def sub_rollback(self, level: int) -> None:
        self._pending = []
        existing = existing_peer(self.node) if self.node else None
        if existing is not None and not existing.broken:
            existing.rollback_to(level)


def _read(stream: RemoteStream) -> Iterator[bytes | memoryview]:
    try:
        yield from stream
    finally:
        stream.close()


def _literal(value: Any, type_oid: int) -> str:
    """A run-time value as a typed SQL literal (COPY cannot take parameters)."""
    if value is None:
        return f"NULL::{_type_name(type_oid)}"
    return f"{remote_sql.quote_literal(to_text(value, type_oid))}::{_type_name(type_oid)}"


def _type_name(type_oid: int) -> str:
    name = _type_names.get(type_oid)
    if name is None:
        name = backend.query("SELECT pg_catalog.format_type($1::oid, NULL)", type_oid)[0][0]
        _type_names[type_oid] = name
    return name
