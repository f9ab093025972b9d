"""A log of handler calls, appended to a file by handler code and read back by the tests.

Handler code runs inside the PostgreSQL backend, not in pytest, so what it received is passed back
through a file: one pickled dict per call, ``{"method": ..., "pid": ..., **data}``.  Pickle keeps
the Python objects themselves (Decimal, datetime, UUID...), which is what the tests check.
"""

from __future__ import annotations

import os
import pickle
from typing import Any


def record(path: str, method: str, **data: Any) -> None:
    entry = {"method": method, "pid": os.getpid(), **data}
    blob = pickle.dumps(entry)
    # one write per entry on an O_APPEND descriptor: entries of concurrent backends do not interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, blob)
    finally:
        os.close(fd)


def read(path: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    if not os.path.exists(path):
        return entries
    with open(path, "rb") as f:
        while True:
            try:
                entries.append(pickle.load(f))
            except EOFError:
                return entries
