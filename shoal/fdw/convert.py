"""How PostgreSQL values look in Python, for the types the extension does not convert in C.

Values reach Python in binary (a type's send format) and are loaded with psycopg's loaders, so a
handler sees the same objects as a psycopg user: Decimal, datetime, UUID, dict/list for JSON,
lists for arrays.  Python values reach PostgreSQL as text in the type's input syntax.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from functools import lru_cache
from typing import Any

from psycopg import adapters
from psycopg.pq import Format

JSON_OIDS = frozenset({114, 3802})  # json, jsonb
JSON_ARRAY_OIDS = frozenset({199, 3807})


@lru_cache(maxsize=512)
def _loader(oid: int):
    cls = adapters.get_loader(oid, Format.BINARY)
    return cls(oid) if cls is not None else None


def from_binary(oid: int, data: bytes) -> Any:
    """A value in binary format as a Python object, or NotImplemented to ask for text."""
    loader = _loader(oid)
    if loader is None:
        return NotImplemented
    return loader.load(data)


def from_text(oid: int, text: str) -> Any:
    """A value of a type psycopg cannot load: its text form."""
    return text


def to_text(value: Any, oid: int) -> str | None:
    """A Python value in the input syntax of the column type ``oid``."""
    kind = type(value)
    if kind is int or (kind is str and oid not in JSON_OIDS):  # most values: keys and text
        return str(value)
    if oid in JSON_OIDS:
        return value if isinstance(value, str) else _json(value)
    return _scalar_text(value, json_elements=oid in JSON_ARRAY_OIDS)


def _scalar_text(value: Any, json_elements: bool = False) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds"
    if isinstance(value, (decimal.Decimal, uuid.UUID, int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return _array_literal(value, json_elements)
    if isinstance(value, dict):
        return _json(value)
    return str(value)


def _json(value: Any) -> str:
    # Non-ASCII as itself, not as \uXXXX escapes: the json type keeps its input text as it is.
    return json.dumps(value, ensure_ascii=False)


def _array_literal(items: list | tuple, json_elements: bool) -> str:
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
        elif isinstance(item, (list, tuple)) and not json_elements:
            parts.append(_array_literal(item, json_elements))
        else:
            text = _json(item) if json_elements else _scalar_text(item)
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"
