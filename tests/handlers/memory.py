"""An in-memory handler for the host's tests (runs inside the PostgreSQL backend, not in pytest).

Its data lives in the module-level dict :data:`TABLES`, keyed by the table option ``name``, so it
lasts as long as the backend and survives the handler being rebuilt (ALTER, invalidations).  Tests
give it data through options:

``source``
    a pickle file holding a list of dicts (column name -> Python value), loaded on first use;
``binary_source``
    a file of PostgreSQL binary COPY data (``COPY ... TO STDOUT (FORMAT binary)``, header and
    trailer included) with one field per column of the table;
``generate``
    a number of rows ``(id int, name text, value float8)`` made on the fly (memory tests), as
    dicts, sequences of all columns or binary chunks of 1000 rows (``row_format``).

``row_format`` picks how ``execute`` answers: ``dict``, ``sequence`` (the requested columns),
``full`` (a sequence per column of the table), ``binary`` (chunks of COPY data) or ``mixed``
(alternating dicts and binary chunks).  For ``binary``: ``chunk_size`` (bytes per chunk, so tuples
and the header get split), ``framing`` (``full``, ``none``, ``header`` or ``trailer``: which of the
COPY header and trailer are kept; ``raw``: the file as it is), ``chunk_type`` (``bytes``,
``bytearray``, ``memoryview``) and ``binary_width`` (``long``: every column; ``short``: only the
requested ones, re-encoded here).

``path_keys`` offers a parameterized path on those columns (comma-separated; the quals stay hints).
``probe_memory`` names a memory context whose size ``execute`` logs (the ``memory`` entries), ``rows``
overrides the row estimate.
``rowid`` names the row id column (UPDATE/DELETE), ``batch_size`` sets bulk inserts, and ``log``
names a file every call is appended to (see :mod:`calllog`), which is how tests see the Python
objects that reached the handler.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from typing import Any

from calllog import record

from shoal.fdw import ForeignDataWrapper

TABLES: dict[str, list[dict[str, Any]]] = {}
BINARY: dict[str, bytes] = {}

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
TRAILER = b"\xff\xff"


def split_copy(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, tuples, trailer) of binary COPY data."""
    if not data.startswith(COPY_SIGNATURE):
        raise ValueError("not binary COPY data")
    (extlen,) = struct.unpack_from("!I", data, 15)
    start = 19 + extlen
    if data[-2:] != TRAILER:
        raise ValueError("binary COPY data without a trailer")
    return data[:start], data[start:-2], TRAILER


def iter_tuples(body: bytes) -> Iterator[list[bytes | None]]:
    """The fields of each tuple of binary COPY tuple data (no header, no trailer)."""
    pos = 0
    while pos < len(body):
        (nfields,) = struct.unpack_from("!h", body, pos)
        pos += 2
        fields: list[bytes | None] = []
        for _ in range(nfields):
            (length,) = struct.unpack_from("!i", body, pos)
            pos += 4
            if length < 0:
                fields.append(None)
            else:
                fields.append(body[pos : pos + length])
                pos += length
        yield fields


def encode_tuple(fields: list[bytes | None]) -> bytes:
    parts = [struct.pack("!h", len(fields))]
    for value in fields:
        if value is None:
            parts.append(struct.pack("!i", -1))
        else:
            parts.append(struct.pack("!i", len(value)) + value)
    return b"".join(parts)


class MemoryHandler(ForeignDataWrapper):
    """Rows kept in this backend's memory; every call is logged when ``log`` is set."""

    def __init__(self, options: dict[str, str], columns: dict) -> None:
        super().__init__(options, columns)
        if "name" not in options:
            raise ValueError('the memory handler needs a "name" option')
        self.name = options["name"]
        self.log = options.get("log")
        self.row_format = options.get("row_format", "dict")
        self.chunk_size = int(options.get("chunk_size", "65536"))
        self.framing = options.get("framing", "full")
        self.chunk_type = options.get("chunk_type", "bytes")
        self.binary_width = options.get("binary_width", "long")
        self.batch_size = int(options.get("batch_size", "1"))
        self._rowid = options.get("rowid")
        self.table_columns = list(columns)  # in table order
        if self.name not in TABLES:
            TABLES[self.name] = self._load()
        if "binary_source" in options and self.name not in BINARY:
            with open(options["binary_source"], "rb") as f:
                BINARY[self.name] = f.read()
        self._record("__init__", options=dict(options), columns=self.table_columns)

    def _load(self) -> list[dict[str, Any]]:
        if "source" in self.options:
            with open(self.options["source"], "rb") as f:
                return list(pickle.load(f))
        return []

    def _record(self, method: str, **data: Any) -> None:
        if self.log:
            record(self.log, method, table=self.name, **data)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return TABLES[self.name]

    # -- scanning -------------------------------------------------------------------------------

    def get_rel_size(self, quals, columns):
        self._record("get_rel_size", quals=[_qual_tuple(q) for q in quals], columns=list(columns))
        if "rows" in self.options:
            n = int(self.options["rows"])
        elif "generate" in self.options:
            n = int(self.options["generate"])
        else:
            n = len(self.rows)
        return float(max(n, 1)), 8 * max(len(columns), 1)

    def get_path_keys(self):
        if "path_keys" not in self.options:
            return []
        return [(self.options["path_keys"].split(","), 1.0)]

    def execute(self, quals, columns, sortkeys=None, limit=None, offset=None):
        self._record("execute", quals=[_qual_tuple(q) for q in quals], params=list(quals.params),
                     columns=list(columns), sortkeys=sortkeys, limit=limit, offset=offset)
        if "probe_memory" in self.options:
            import _shoal_pg

            ((size,),) = _shoal_pg.query(
                "SELECT sum(total_bytes)::int8 FROM pg_backend_memory_contexts WHERE name = $1",
                self.options["probe_memory"],
            )
            self._record("memory", bytes=size)
        if "generate" in self.options:
            return self._generate(int(self.options["generate"]), columns)
        if self.row_format in ("binary", "mixed") and self.name in BINARY:
            return self._binary(columns)
        rows = list(self.rows)  # a snapshot: UPDATE and DELETE change the list while the scan runs
        if self.row_format == "sequence":
            return self._closing([row.get(c) for c in columns] for row in rows)
        if self.row_format == "full":
            return self._closing(tuple(row.get(c) for c in self.table_columns) for row in rows)
        return self._closing(dict(row) for row in rows)

    def _closing(self, rows: Iterator[Any]) -> Iterator[Any]:
        """The rows, logging how many were taken when the host drops the scan (``finally``)."""
        taken = 0
        try:
            for row in rows:
                taken += 1
                yield row
        finally:
            self._record("scan_closed", taken=taken)

    def _generate(self, n: int, columns: list[str]) -> Iterator[Any]:
        if self.row_format == "binary":
            yield from self._generate_binary(n)
            return
        if self.row_format == "dict":
            for i in range(n):
                yield {"id": i, "name": f"row {i}", "value": i * 0.5}
            return
        for i in range(n):
            yield (i, f"row {i}", i * 0.5)

    def _generate_binary(self, n: int) -> Iterator[bytes]:
        """(id int4, name text, value float8) rows as binary COPY data, a chunk per 1000 rows."""
        pack = struct.Struct("!hi i i").pack
        for start in range(0, n, 1000):
            parts = []
            for i in range(start, min(start + 1000, n)):
                name = f"row {i}".encode()
                parts.append(pack(3, 4, i, len(name)) + name + struct.pack("!id", 8, i * 0.5))
            yield b"".join(parts)

    def _binary(self, columns: list[str]) -> Iterator[Any]:
        if self.framing == "raw":  # the file as it is, even if it is not valid COPY data
            yield from self._chunks(BINARY[self.name])
            return
        header, body, trailer = split_copy(BINARY[self.name])
        if self.binary_width == "short":
            wanted = [self.table_columns.index(c) for c in columns]
            body = b"".join(
                encode_tuple([fields[i] for i in wanted]) for fields in iter_tuples(body)
            )
        if self.row_format == "mixed":
            # every other tuple as binary, the rest as dicts: both paths in one scan
            for i, (fields, row) in enumerate(zip(_tuples_of(body), self.rows, strict=True)):
                yield fields if i % 2 == 0 else dict(row)
            return
        data = (
            (header if self.framing in ("full", "header") else b"")
            + body
            + (trailer if self.framing in ("full", "trailer") else b"")
        )
        yield from self._chunks(data)

    def _chunks(self, data: bytes) -> Iterator[Any]:
        view = memoryview(data)
        for pos in range(0, len(data), self.chunk_size):
            chunk = view[pos : pos + self.chunk_size]
            if self.chunk_type == "bytes":
                yield bytes(chunk)
            elif self.chunk_type == "bytearray":
                yield bytearray(chunk)
            else:
                yield chunk

    def explain(self, quals, columns, sortkeys=None, limit=None, offset=None, verbose=False):
        return [f"memory table {self.name} ({self.row_format})"]

    # -- modification ---------------------------------------------------------------------------

    @property
    def rowid_column(self) -> str | None:
        return self._rowid

    def begin_modify(self, operation: str) -> None:
        self._record("begin_modify", operation=operation)

    def end_modify(self) -> None:
        self._record("end_modify")

    def insert(self, values: dict[str, Any]) -> dict[str, Any]:
        self._record("insert", values=dict(values))
        self.rows.append(dict(values))
        return dict(values)

    def bulk_insert(self, rows: list[dict[str, Any]]) -> None:
        self._record("bulk_insert", rows=[dict(r) for r in rows])
        self.rows.extend(dict(r) for r in rows)

    def _find(self, rowid: Any) -> int:
        for i, row in enumerate(self.rows):
            if row.get(self._rowid) == rowid:
                return i
        raise KeyError(f"no row with {self._rowid} = {rowid!r}")

    def update(self, rowid: Any, newvalues: dict[str, Any]) -> dict[str, Any]:
        self._record("update", rowid=rowid, values=dict(newvalues))
        i = self._find(rowid)
        self.rows[i] = {**self.rows[i], **newvalues}
        return dict(self.rows[i])

    def delete(self, rowid: Any) -> dict[str, Any]:
        self._record("delete", rowid=rowid)
        return self.rows.pop(self._find(rowid))

    # -- transactions ---------------------------------------------------------------------------

    def begin(self, serializable: bool) -> None:
        self._record("begin", serializable=serializable)

    def pre_commit(self) -> None:
        self._record("pre_commit")

    def commit(self) -> None:
        self._record("commit")

    def rollback(self) -> None:
        self._record("rollback")

    def pre_prepare(self, gid: str | None) -> None:
        self._record("pre_prepare", gid=gid)

    def prepare(self, gid: str | None) -> None:
        self._record("prepare", gid=gid)

    def sub_begin(self, level: int) -> None:
        self._record("sub_begin", level=level)

    def sub_commit(self, level: int) -> None:
        self._record("sub_commit", level=level)

    def sub_rollback(self, level: int) -> None:
        self._record("sub_rollback", level=level)


def _tuples_of(body: bytes) -> Iterator[bytes]:
    for fields in iter_tuples(body):
        yield encode_tuple(fields)


def _qual_tuple(q: Any) -> tuple[Any, Any, Any, str]:
    return (q.field_name, q.operator, q.value, q.sql)
