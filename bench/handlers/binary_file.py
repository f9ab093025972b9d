"""A shoal_fdw handler that serves a PostgreSQL binary COPY file through the binary fast path.

Used by ``bench/fastpath.py``; the server finds it through ``shoal.python_path`` as
``wrapper 'binary_file.BinaryFile'``.  Table options:

* ``filename`` (required): a file written by ``COPY ... TO ... (FORMAT binary)`` with every column
  of the foreign table, in table order;
* ``chunk_bytes`` (default 262144): how many bytes each ``execute`` item carries.

The handler does no work per row: it reads the file in fixed-size chunks and yields them as they
are.  The extension skips the COPY header, reassembles tuples split across chunks and decodes the
values in C, so this measures the host's fast path and not Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from shoal.fdw import ColumnDefinition, ForeignDataWrapper, Quals, SortKey
from shoal.fdw.options import OptionError

DEFAULT_CHUNK_BYTES = 256 * 1024
_OPTIONS = frozenset({"filename", "chunk_bytes", "startup_cost", "tuple_cost"})


def _chunk_bytes(options: dict[str, str]) -> int:
    text = options.get("chunk_bytes", str(DEFAULT_CHUNK_BYTES))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise OptionError(f'option "chunk_bytes" must be a positive integer, not "{text}"')
    return value


class BinaryFile(ForeignDataWrapper):
    """Yields a binary COPY file in chunks of ``chunk_bytes`` bytes."""

    @classmethod
    def validate_options(cls, kind: str, options: dict[str, str]) -> None:
        """Reject unknown options and a bad ``chunk_bytes`` (``filename`` is checked at use, since a
        server's options are validated without its tables')."""
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise OptionError(f'invalid option "{unknown[0]}" for binary_file.BinaryFile',
                              sqlstate="HV00D", hint="Valid options: filename, chunk_bytes.")
        _chunk_bytes(options)

    def __init__(self, options: dict[str, str], columns: dict[str, ColumnDefinition]) -> None:
        super().__init__(options, columns)
        if not options.get("filename"):
            raise OptionError('binary_file.BinaryFile needs the table option "filename"')
        self.filename = options["filename"]
        self.chunk_bytes = _chunk_bytes(options)

    def get_rel_size(self, quals: Quals, columns: list[str]) -> tuple[float, int]:
        """Rows guessed from the file size: 2 bytes per tuple, 4 per field, ~8 per value."""
        try:
            size = os.stat(self.filename).st_size
        except OSError:
            return super().get_rel_size(quals, columns)
        per_row = 2 + 12 * max(len(self.columns), 1)
        return max(size / per_row, 1.0), 8 * max(len(columns), 1)

    def execute(
        self,
        quals: Quals,
        columns: list[str],
        sortkeys: list[SortKey] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Iterator[bytes]:
        """The whole file, chunk by chunk (quals are left to PostgreSQL to check)."""
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        # Unbuffered: FileIO.read(n) reads straight into the bytes object it returns, where a
        # buffered reader would copy every chunk once more.
        with open(self.filename, "rb", buffering=0) as f:
            while chunk := f.read(self.chunk_bytes):
                yield chunk

    def explain(
        self,
        quals: Quals,
        columns: list[str],
        sortkeys: list[SortKey] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        verbose: bool = False,
    ) -> dict[str, str]:
        """The file and chunk size, as file_fdw shows its file."""
        lines = {"Binary COPY File": self.filename}
        if verbose:
            lines["Chunk Bytes"] = str(self.chunk_bytes)
        return lines
