"""The Python end of the extension's bridge: what the C code calls.

Nothing here is for handler authors.  It builds handlers from catalog data, converts values the C
code has no fast path for, validates options and wires up interrupts.
"""

from __future__ import annotations

import importlib
import signal
import traceback
from typing import Any

from shoal.fdw.convert import from_binary, from_text, to_text
from shoal.fdw.handler import ForeignDataWrapper
from shoal.fdw.options import resolve_wrapper, validate_options
from shoal.fdw.quals import ColumnDefinition, ParamValue, Qual, Quals, SortKey

__all__ = [
    "ParamValue",
    "Qual",
    "Quals",
    "SortKey",
    "create_handler",
    "describe_exception",
    "describe_sortkeys",
    "from_binary",
    "from_text",
    "interrupts",
    "to_text",
    "validate_options",
]


def create_handler(relid: int, options: dict[str, str], columns: list[tuple]) -> ForeignDataWrapper:
    """Instantiate the handler of one foreign table from its merged options and columns."""
    cls = resolve_wrapper(options.get("wrapper"))
    handler_options = {k: v for k, v in options.items() if k != "wrapper"}
    coldefs = {
        name: ColumnDefinition(name, attnum, type_oid, typmod, type_name, base_type_name, colopts)
        for (name, attnum, type_oid, typmod, type_name, base_type_name, colopts) in columns
    }
    handler = cls(handler_options, coldefs)
    handler.relid = relid
    return handler


def describe_exception(exc: BaseException) -> tuple[str, str | None, str | None, str | None]:
    """(message, SQLSTATE, detail, hint) of the ERROR that a handler's exception becomes.

    An exception with a SQLSTATE is an intended SQL error, shoal's own (bad options, an unknown
    node) or a remote node's (a psycopg error): it reads as that error, without a traceback.  Any
    other exception is a bug somewhere in Python: its type, message and traceback are shown.
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        diag = getattr(exc, "diag", None)
        message = getattr(diag, "message_primary", None) or str(exc) or type(exc).__name__
        detail = getattr(diag, "message_detail", None) or getattr(exc, "detail", None)
        hint = getattr(diag, "message_hint", None) or getattr(exc, "hint", None)
        return message, sqlstate, detail, hint
    text = str(exc)
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return message, None, "".join(traceback.format_exception(exc)), getattr(exc, "hint", None)


def describe_sortkeys(sortkeys: list[SortKey]) -> str:
    """The ORDER BY a scan was asked for, as EXPLAIN shows it."""
    parts = []
    for key in sortkeys:
        text = key.attname + (" DESC" if key.is_reversed else "")
        if key.nulls_first != key.is_reversed:
            text += " NULLS FIRST" if key.nulls_first else " NULLS LAST"
        parts.append(text)
    return ", ".join(parts)


class _Interrupts:
    """Lets cancel, statement_timeout and termination interrupt Python code blocked in a system call.

    The extension chains PostgreSQL's SIGINT and SIGTERM handlers with Python's SIGINT; this
    Python-level handler then runs in the backend's thread and raises QueryCanceled if the backend
    has a cancel or termination pending.
    """

    def __init__(self) -> None:
        self._pg: Any = None

    def install(self) -> None:
        self._pg = importlib.import_module("_shoal_pg")
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._pg.check_interrupts()


interrupts = _Interrupts()
