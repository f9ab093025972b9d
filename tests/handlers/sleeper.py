"""A handler that blocks, for the cancel and statement_timeout tests.

``how`` picks the wait: ``sleep`` (time.sleep, a blocking system call), ``pgwait``
(``_shoal_pg.wait(timeout=...)`` on the backend's latch, the GIL released) or ``spin`` (a pure
Python loop).  ``seconds`` bounds it (so a test that fails does not hang), ``where`` says whether it
blocks in ``execute`` itself or in the row iterator after the first row, and ``marker`` names a file
created just before blocking, so a test knows when to cancel.  ``where 'swallow'`` blocks in
``execute`` inside ``try: ... except Exception: pass``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import _shoal_pg

from shoal.fdw import ForeignDataWrapper


def block(how: str, seconds: float, marker: str | None = None) -> None:
    if marker:
        with open(marker, "a"):
            pass
    if how == "sleep":
        time.sleep(seconds)
    elif how == "pgwait":
        # the latch may be set for other reasons: wait again until the time is up
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            _shoal_pg.wait(timeout=left)
    elif how == "spin":
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
    else:
        raise ValueError(f"unknown way to block: {how}")


class Sleeper(ForeignDataWrapper):
    def __init__(self, options: dict[str, str], columns: dict) -> None:
        super().__init__(options, columns)
        self.how = options.get("how", "sleep")
        self.seconds = float(options.get("seconds", "30"))
        self.where = options.get("where", "execute")
        self.marker = options.get("marker")

    def execute(self, quals, columns, sortkeys=None, limit=None, offset=None) -> Any:
        if self.where == "swallow":
            try:
                block(self.how, self.seconds, self.marker)
            except Exception:  # noqa: BLE001 - on purpose: a cancel must get through anyway
                pass
            return [(1,)]
        if self.where == "execute":
            block(self.how, self.seconds, self.marker)
            return [(1,)]
        return self._rows()

    def _rows(self) -> Iterator[tuple[int]]:
        yield (1,)
        block(self.how, self.seconds, self.marker)
        yield (2,)
