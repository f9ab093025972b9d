"""shoal's own handler: a partition (or any table) that lives on another shoal node.

The server names the node (``OPTIONS (node 'n2')``, a name in ``shoal.nodes``); the table may name
the remote ``schema_name`` and ``table_name`` (default: the local ones), and a column its remote
``column_name``.  Every shippable qual, the sort and the limit are pushed down; statements travel
through the node's multiplexer and rows come back as binary tuple data for the extension's fast
path, so local column types must match the remote ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shoal.errors import FeatureNotSupported, SqlError
from shoal.fdw import backend, transport
from shoal.fdw.handler import ForeignDataWrapper
from shoal.fdw.options import boolean_option
from shoal.fdw.quals import ColumnDefinition, Quals, SortKey
from shoal.multiplexer.client import RemoteError, Stream
from shoal.multiplexer.protocol import decode_text_tuples
from shoal.planner import remote_sql

_SHIPPABLE_COLLATIONS = (None, "default", "C", "POSIX")
_TID = 27  # pg_type oid of tid


class RemotePartition(ForeignDataWrapper):
    """Reads and writes rows of a table on another shoal node."""

    exact_quals = True
    # one remote plan per statement shape, kept by the workers, whatever the values
    constants_as_params = True
    batch_size = 200
    # UPDATE and DELETE find their rows again by the remote row's address, read by the scan
    # (inside the transaction's block on that node, FOR UPDATE, so it cannot move meanwhile)
    rowid_column = "ctid"
    text_values = True  # the remote node parses what this one printed: nothing lost on the way

    def __init__(self, options: dict[str, str], columns: dict[str, ColumnDefinition]) -> None:
        super().__init__(options, columns)
        self.node = options.get("node")
        self._remote_name = {name: col.options.get("column_name", name) for name, col in columns.items()}
        # Deparsed quals name the local columns: with renamed columns they stay local hints.
        if any(name != remote for name, remote in self._remote_name.items()):
            self.exact_quals = False
        self._table: str | None = None
        self._rows_estimate: float | None = None
        self._distinct: dict[str, float] = {}
        self._sql_cache: dict[tuple, str] = {}  # a plan's scans all send the same SQL
        self._writes: list[Stream] = []  # batches sent, checked at the end of the statement
        self._skip_conflicts = False  # INSERT ... ON CONFLICT DO NOTHING
        self._upsert: remote_sql.Upsert | None = None  # INSERT ... ON CONFLICT DO UPDATE
        self._upserted: set[tuple[Any, ...]] = set()  # conflict keys of the rows it has affected
        self._upsert_types: list[int] = []
        self._unique_keys: list[tuple[str, ...]] | None = None
        self._analyze_rows: float | None = None  # from analyze_size, for the analyze_sample after it
        self._routing: tuple[str | None, frozenset[str], list[str]] | None = None

    # -- where the table is -------------------------------------------------------------------

    def _node(self) -> str:
        if not self.node:
            raise SqlError("this foreign table's server names no node", sqlstate="HV000",
                           hint="Add OPTIONS (node '...') to the server, or a wrapper option for a "
                                "Python handler.")
        return self.node

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
        return [self._remote_name.get(c, c) for c in columns]  # "ctid" is the system column

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
        key = (tuple(columns), tuple(q.sql for q in quals), tuple(sortkeys or ()), limit)
        sql = self._sql_cache.get(key)
        if sql is None:
            if len(self._sql_cache) >= 256:
                self._sql_cache.clear()
            sql = self._sql_cache[key] = remote_sql.select_sql(
                self._table_sql(), self._remote_columns(columns), quals, self._remote_sortkeys(sortkeys),
                limit, for_update="ctid" in columns,
            )
        return sql

    # -- planning -----------------------------------------------------------------------------

    def get_rel_size(self, quals: Quals, columns: list[str]) -> tuple[float, int]:
        rows, distinct = self._statistics()
        estimate = rows
        for qual in quals:
            if qual.operator == "=" and qual.value is not None:  # a ParamValue counts: a lookup
                column = self._remote_name.get(qual.field_name or "")
                estimate *= 1.0 / distinct[column] if column in distinct else 0.005
            elif qual.field_name is not None:
                estimate *= 0.33
        return max(estimate, 1.0), 32 * max(len(columns), 1)

    def _statistics(self) -> tuple[float, dict[str, float]]:
        """The remote table's row count and its columns' numbers of distinct values, as the remote
        node's ANALYZE saw them (those the caller may read), asked once."""
        if self._rows_estimate is None:
            stream = transport.run(
                self._node(),
                "SELECT greatest(c.reltuples, 0)::text, s.attname::text, s.n_distinct::text "
                "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname "
                "WHERE c.oid = $1::regclass",
                [25], [self._table_sql()], write=False,
            )
            found = decode_text_tuples(b"".join(stream))
            rows = float(found[0][0]) if found and found[0][0] else 0.0
            self._rows_estimate = rows or 1000.0
            # n_distinct < 0 is a fraction of the rows: distinct values grow with the table
            self._distinct = {
                name: max(float(n) if float(n) > 0 else -float(n) * self._rows_estimate, 1.0)
                for _, name, n in found if name is not None and n is not None and float(n) != 0
            }
        return self._rows_estimate, self._distinct

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
    ) -> Iterator[bytes]:
        self._check_writes()
        # the parameters come as text (text_values), which the remote node parses back exactly
        params, types = (quals.params, quals.param_types) if self.exact_quals else ([], [])
        # a scan that reads row addresses is an UPDATE's or DELETE's: it locks them in the block
        stream = transport.run(self._node(), self._select(quals, columns, sortkeys, limit), types, params,
                               write="ctid" in columns)
        return _read(stream)

    @property
    def can_analyze(self) -> bool:  # type: ignore[override]
        """Only with the server or table option ``analyze 'true'``: with every foreign partition
        sampled, TPROC-C ran 8-17% slower in our runs (the planner's choices with full statistics;
        see the README), so ANALYZE skips them unless asked."""
        return boolean_option(self.options, "analyze")

    def analyze_size(self) -> tuple[float, float] | None:
        """The remote table's pages and rows, from its node's catalog (its rows counted if that
        table was never vacuumed nor analyzed); None, with a warning, while its node is
        unreachable: a database-wide ANALYZE goes on without it."""
        try:
            return self._remote_size()
        except RemoteError as exc:
            if exc.sqlstate != "08006":
                raise
            backend.log("warning", f"shoal: ANALYZE skipped {self._table_sql()} on node "
                                   f"{self.node}: {exc.message}")
            return None

    def _remote_size(self) -> tuple[float, float]:
        node, table = self._node(), self._table_sql()
        stream = transport.run(
            node, "SELECT (pg_catalog.pg_relation_size(c.oid) / "
                  "pg_catalog.current_setting('block_size')::int)::text, c.reltuples::text "
                  "FROM pg_catalog.pg_class c WHERE c.oid = $1::regclass",
            [25], [table], write=False)
        (pages, rows), = decode_text_tuples(b"".join(stream))
        if float(rows) < 0:
            (rows,), = decode_text_tuples(b"".join(transport.run(
                node, f"SELECT count(*)::text FROM {table}", [], [], write=False)))
        self._analyze_rows = float(rows)
        return float(pages), self._analyze_rows

    def analyze_sample(self, columns: list[str], rows: int) -> tuple[float, Iterator[bytes]]:
        """A random sample of the remote table's rows (remote_sql.sample_sql), sized on the row
        count analyze_size found, and that count."""
        total = self._analyze_rows if self._analyze_rows is not None else self._remote_size()[1]
        self._analyze_rows = None
        select = remote_sql.sample_sql(self._table_sql(), self._remote_columns(columns), rows, total)
        return total, _read(transport.run(self._node(), select, [], [], write=False))

    def explain(self, quals, columns, sortkeys=None, limit=None, offset=None, verbose=False):
        return {"Node": self.node or "", "Remote SQL": self._select(quals, columns, sortkeys, limit)}

    # -- writes -------------------------------------------------------------------------------

    # An UPDATE or DELETE of rows chosen by quals alone goes as one statement: one round trip.
    direct_modify = True

    def modify_directly(
        self, operation: str, quals: Quals, assignments: dict[str, str], returning: list[str] | None
    ) -> int | Iterator[bytes]:
        self._check_writes()
        sql = self._modify_sql(operation, quals, assignments, returning)
        stream = transport.run(self._node(), sql, quals.param_types, quals.params, write=True)
        if returning is None:
            return stream.wait()[1]
        return _read(stream)

    def explain_modify(self, operation, quals, assignments, returning, verbose=False):
        return {"Node": self.node or "",
                "Remote SQL": self._modify_sql(operation, quals, assignments, returning)}

    def _modify_sql(self, operation: str, quals: Quals, assignments: dict[str, str],
                    returning: list[str] | None) -> str:
        key = (operation, tuple(assignments.items()), tuple(q.sql for q in quals), tuple(returning or ()))
        sql = self._sql_cache.get(key)
        if sql is None:
            if len(self._sql_cache) >= 256:
                self._sql_cache.clear()
            remote = {self._remote_name[c]: expr for c, expr in assignments.items()}
            sql = self._sql_cache[key] = remote_sql.modify_sql(
                self._table_sql(), operation, quals, remote, self._remote_columns(returning or []))
        return sql

    # INSERT ... ON CONFLICT DO UPDATE goes as such to the remote node, one row per statement
    upsert = True

    def begin_modify(
        self, operation: str, on_conflict: str | None = None, conflict_update: dict[str, Any] | None = None
    ) -> None:
        self._skip_conflicts = on_conflict == "nothing"
        self._upsert = None
        if conflict_update is not None:
            if not self.exact_quals:
                raise FeatureNotSupported("ON CONFLICT DO UPDATE is not supported for a foreign table whose "
                                          "columns have other names on the remote node (column_name)")
            self._upsert = remote_sql.Upsert(
                self._conflict_target(conflict_update.get("target")), conflict_update["alias"],
                tuple(conflict_update["set"].items()), conflict_update["where"])
            self._upsert_types = list(conflict_update["types"])
        self._upserted = set()

    def _conflict_target(self, named: list[str] | None) -> tuple[str, ...]:
        """The columns of the remote table's unique constraint that ON CONFLICT names there: the
        one on the columns the statement named (``named``, kept in the plan by the extension), or
        the only one.  shoal's partitions have the distributed table's unique constraints.  Asked
        once per handler: adding a unique key to a distributed table has every backend rebuild the
        handlers of its partitions (shoal.sharding.uniques)."""
        if self._unique_keys is None:
            self._unique_keys = self._remote_unique_keys()
        if named == []:
            raise FeatureNotSupported(
                "an expression in the conflict target of ON CONFLICT DO UPDATE is not supported for "
                "rows that go to a foreign partition", hint="Name the columns of a unique constraint.")
        if named is not None:
            wanted = {self._remote_name.get(column, column) for column in named}
            for key in self._unique_keys:
                if set(key) == wanted:
                    return key
            raise SqlError(
                "there is no unique or exclusion constraint matching the ON CONFLICT specification",
                detail=f"The remote table {self._table_sql()} has no unique constraint on exactly "
                       f"({', '.join(named)}), without a predicate or an expression.",
                sqlstate="42P10")
        if len(self._unique_keys) > 1:
            raise FeatureNotSupported(
                f"ON CONFLICT DO UPDATE: the remote table {self._table_sql()} has several unique "
                "constraints, and the statement does not say which one to check by its columns",
                hint="Name the columns of one of them in ON CONFLICT (...).")
        return self._unique_keys[0] if self._unique_keys else ()

    def _remote_unique_keys(self) -> list[tuple[str, ...]]:
        """The column lists of the remote table's unique indexes (without predicates or expressions)."""
        stream = transport.run(
            self._node(),
            "SELECT x.indexrelid::text, a.attname::text FROM pg_catalog.pg_index x "
            "CROSS JOIN LATERAL pg_catalog.unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, i) "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
            "WHERE x.indrelid = $1::regclass AND x.indisunique AND x.indpred IS NULL "
            "AND x.indexprs IS NULL ORDER BY x.indexrelid, k.i",
            [25], [self._table_sql()], write=False,
        )
        keys: dict[str, list[str]] = {}
        for index, column in decode_text_tuples(b"".join(stream)):
            keys.setdefault(index, []).append(column)
        return list(dict.fromkeys(tuple(k) for k in keys.values()))  # the same columns twice count once

    def insert(self, values: dict[str, Any], clause_values: list[Any] | None = None) -> bytes:
        """One row, with RETURNING of the row as stored: binary tuple data the extension decodes
        (empty if a conflict skipped it, or left it alone)."""
        key = None
        if self._upsert is not None:
            key = tuple(values.get(column) for column in self._upsert.target)
            if key in self._upserted:
                # as PostgreSQL does: each row goes in its own remote statement, which cannot tell
                raise SqlError("ON CONFLICT DO UPDATE command cannot affect row a second time",
                               hint="Ensure that no rows proposed for insertion within the same command "
                                    "have duplicate constrained values.", sqlstate="21000")
        names = list(values)
        everything = list(self.columns)
        sql = remote_sql.insert_sql(
            self._table_sql(), self._remote_columns(names), returning=self._remote_columns(everything),
            skip_conflicts=self._skip_conflicts, upsert=self._upsert,
        )
        types = [self.columns[n].type_oid for n in names]
        params = [values[n] for n in names]
        if clause_values is not None:
            types += self._upsert_types
            params += clause_values
        row = b"".join(transport.run(self._node(), sql, types, params, write=True))
        if row and key is not None and None not in key:  # inserted or updated (NULLs never conflict)
            self._upserted.add(key)
        return row

    def bulk_insert(self, rows: list[dict[str, Any]]) -> None:
        """A batch as one multi-row INSERT, sent without waiting (checked at end of statement)."""
        names = list(rows[0])
        types = [self.columns[n].type_oid for n in names]
        sql = remote_sql.insert_sql(self._table_sql(), self._remote_columns(names), rows=len(rows),
                                    skip_conflicts=self._skip_conflicts)
        params: list[str | None] = []
        for row in rows:
            params.extend([row[n] for n in names])
        self._writes.append(transport.run(self._node(), sql, types * len(rows), params, write=True))

    def update(self, rowid: Any, newvalues: dict[str, Any]) -> bytes | None:
        """One row by its remote address; the row as stored comes back for RETURNING (nothing if
        the row was not there)."""
        parent, keys, insertable = self._partitioning()
        if parent is not None and keys & newvalues.keys():
            return self._move(rowid, newvalues, parent, insertable)
        names = list(newvalues)
        sql = remote_sql.update_sql(self._table_sql(), self._remote_columns(names),
                                    returning=self._remote_columns(list(self.columns)))
        types = [self.columns[n].type_oid for n in names] + [_TID]
        params = [newvalues[n] for n in names] + [str(rowid)]
        self._check_writes()
        return b"".join(transport.run(self._node(), sql, types, params, write=True))

    def delete(self, rowid: Any) -> bytes:
        """One row by its remote address; the row as it was comes back for RETURNING."""
        sql = remote_sql.delete_sql(self._table_sql(), returning=self._remote_columns(list(self.columns)))
        self._check_writes()
        return b"".join(transport.run(self._node(), sql, [_TID], [str(rowid)], write=True))

    def _partitioning(self) -> tuple[str | None, frozenset[str], list[str]]:
        """The partitioned table this one is a partition of, its partition key's columns, and the
        columns an INSERT may set (not generated)."""
        if self._routing is None:
            rows = backend.query(
                "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname), "
                "  ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a "
                "        WHERE a.attrelid = p.partrelid AND a.attnum = ANY (p.partattrs::int2[])) "
                "FROM pg_catalog.pg_inherits i "
                "JOIN pg_catalog.pg_partitioned_table p ON p.partrelid = i.inhparent "
                "JOIN pg_catalog.pg_class c ON c.oid = i.inhparent "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE i.inhrelid = $1::oid",
                self.relid)
            insertable = [r[0] for r in backend.query(
                "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = $1::oid AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", self.relid)]
            parent, keys = (rows[0][0], frozenset(rows[0][1] or ())) if rows else (None, frozenset())
            self._routing = (parent, keys, insertable)
        return self._routing

    def _move(self, rowid: Any, newvalues: dict[str, Any], parent: str, insertable: list[str]) -> None:
        """An UPDATE of the partition key: PostgreSQL does not move rows out of foreign partitions,
        so the row leaves this one and goes back in through the partitioned table, which routes it."""
        names = list(self.columns)
        returning = ", ".join(f"{remote_sql.quote_ident(c)}::text" for c in self._remote_columns(names))
        sql = f"DELETE FROM {self._table_sql()} WHERE ctid = $1 RETURNING {returning}"
        self._check_writes()
        old = decode_text_tuples(b"".join(transport.run(self._node(), sql, [_TID], [str(rowid)], write=True)))
        if not old:
            return None
        row = dict(zip(names, old[0], strict=True))
        row.update(newvalues)  # text already (text_values)
        columns = [c for c in insertable if c in row]
        values = ", ".join(f"${i + 1}::{self.columns[c].type_name}" for i, c in enumerate(columns))
        backend.query(f"INSERT INTO {parent} ({', '.join(remote_sql.quote_ident(c) for c in columns)}) "
                      f"VALUES ({values})", *[row[c] for c in columns])
        return None  # RETURNING shows the new row as the statement computed it

    def end_modify(self) -> None:
        self._check_writes()

    def _check_writes(self) -> None:
        writes, self._writes = self._writes, []
        for stream in writes:
            stream.wait()

    # -- transactions: the remote blocks themselves are shoal.fdw.transport's ----------------

    def pre_commit(self) -> None:
        self._check_writes()

    def rollback(self) -> None:
        self._writes = []

    def sub_commit(self, level: int) -> None:
        self._check_writes()

    def sub_rollback(self, level: int) -> None:
        self._writes = []


def _read(stream: Stream) -> Iterator[bytes]:
    try:
        yield from stream
    finally:
        stream.cancel()
