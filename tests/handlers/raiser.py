"""Handlers that fail, for the error tests.

``Raiser`` raises where option ``where`` says: ``init``, ``rel_size``, ``execute``, ``iterate``
(after the first row), ``insert``, a transaction callback (``pre_commit``, ``commit``, ``rollback``,
``sub_begin``, ``sub_commit``, ``sub_rollback``, ``pre_prepare``, ``prepare``), ``bad_row`` (a row of
the wrong shape), ``bad_value`` (a value the column type rejects), ``bad_binary`` (truncated binary
data), ``sqlstate`` (an exception carrying ``sqlstate`` and ``hint``), ``swallow`` (swallows a
PostgreSQL error raised by ``_shoal_pg.query`` while scanning; ``swallow_pre_commit``: in
pre_commit); any other value (``none``) raises nowhere.  The message always includes ``message``.
"""

from __future__ import annotations

from typing import Any

import _shoal_pg

from shoal.fdw import ForeignDataWrapper


class HandlerError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        if sqlstate:
            self.sqlstate = sqlstate
        if hint:
            self.hint = hint


def _fail(message: str) -> None:
    # a nested call, so the traceback has more than one frame
    raise HandlerError(message)


class Raiser(ForeignDataWrapper):
    rowid_column = "id"

    def __init__(self, options: dict[str, str], columns: dict) -> None:
        super().__init__(options, columns)
        self.where = options.get("where", "execute")
        self.message = options.get("message", "boom")
        if self.where == "init":
            _fail(f"{self.message} in __init__")

    def get_rel_size(self, quals, columns):
        if self.where == "rel_size":
            _fail(f"{self.message} in get_rel_size")
        return 10.0, 8

    def execute(self, quals, columns, sortkeys=None, limit=None, offset=None) -> Any:
        if self.where == "execute":
            _fail(f"{self.message} in execute")
        if self.where == "sqlstate":
            raise HandlerError(f"{self.message} with a code", sqlstate="22012", hint="Divide less.")
        if self.where == "bad_row":
            return [(1, 2, 3, 4, 5)]
        if self.where == "bad_value":
            return [{"id": "not a number"}]
        if self.where == "bad_binary":
            return [b"\x00\x01\x00\x00\x00\x04\x00\x00"]  # one int4 field, 2 of its 4 bytes
        if self.where == "swallow":
            return self._swallow()
        return self._rows()

    def _rows(self):
        yield {"id": 1}
        if self.where == "iterate":
            _fail(f"{self.message} while iterating")
        yield {"id": 2}

    def _swallow(self):
        try:
            _shoal_pg.query("SELECT 1/0")
        except _shoal_pg.PgError:
            pass  # the host must still report the division by zero
        yield {"id": 1}

    def insert(self, values):
        if self.where == "insert":
            _fail(f"{self.message} in insert")
        return None

    def pre_commit(self) -> None:
        if self.where == "pre_commit":
            _fail(f"{self.message} in pre_commit")
        if self.where == "swallow_pre_commit":
            try:
                _shoal_pg.query("SELECT 1/0")
            except _shoal_pg.PgError:
                pass

    def commit(self) -> None:
        if self.where == "commit":
            _fail(f"{self.message} in commit")

    def rollback(self) -> None:
        if self.where == "rollback":
            _fail(f"{self.message} in rollback")

    def sub_begin(self, level: int) -> None:
        if self.where == "sub_begin":
            _fail(f"{self.message} in sub_begin({level})")

    def sub_commit(self, level: int) -> None:
        if self.where == "sub_commit":
            _fail(f"{self.message} in sub_commit({level})")

    def sub_rollback(self, level: int) -> None:
        if self.where == "sub_rollback":
            _fail(f"{self.message} in sub_rollback({level})")

    def pre_prepare(self, gid: str | None) -> None:
        if self.where == "pre_prepare":
            _fail(f"{self.message} in pre_prepare({gid})")

    def prepare(self, gid: str | None) -> None:
        if self.where == "prepare":
            _fail(f"{self.message} in prepare({gid})")


class NotAHandler:
    """Not a ForeignDataWrapper subclass."""

    def __init__(self, options: dict[str, str], columns: dict) -> None:
        pass


class Picky(ForeignDataWrapper):
    """Checks its own options: ``size`` must be a positive integer."""

    @classmethod
    def validate_options(cls, kind: str, options: dict[str, str]) -> None:
        from shoal.fdw.options import OptionError

        if "size" in options and not (options["size"].isdigit() and int(options["size"]) > 0):
            raise OptionError(f'option "size" must be a positive integer, not "{options["size"]}"')

    def execute(self, quals, columns, sortkeys=None, limit=None, offset=None):
        return [{"id": int(self.options.get("size", "1"))}]
