"""How many server processes of each kind a node runs while a benchmark runs, from pg_stat_activity.

``BackendSampler`` polls one or more nodes in a thread and keeps, per node and per ``backend_type``, the
most rows seen at once; its own sessions (and any pids it is told to ignore) are left out.  The benchmarks
use it for the number of backends on the non-coordinator node: client backends (postgres_fdw opens one per
coordinator session) and shoal's workers (a fixed pool).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

QUERY = ("SELECT coalesce(backend_type, '?'), count(*) FROM pg_stat_activity "
         "WHERE pid <> ALL(%s) GROUP BY 1")


def is_shoal_worker(backend_type: str) -> bool:
    return "shoal" in backend_type and "worker" in backend_type


def summary(most: Mapping[str, int]) -> dict[str, int]:
    """Client backends, shoal workers and their sum, from one node's most-seen counts."""
    clients = most.get("client backend", 0)
    workers = sum(n for kind, n in most.items() if is_shoal_worker(kind))
    return {"client_backends": clients, "shoal_workers": workers, "total": clients + workers}


class BackendSampler:
    """The most backends of each type seen on each node between __enter__ and __exit__."""

    def __init__(self, conninfos: Mapping[str, str], ignore: Iterable[int] = (),
                 interval: float = 0.2) -> None:
        self.conns = {node: psycopg.connect(c, autocommit=True) for node, c in conninfos.items()}
        self.ignore = list(ignore) + [c.info.backend_pid for c in self.conns.values()]
        self.interval = interval
        self.most: dict[str, dict[str, int]] = {node: {} for node in self.conns}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="backend-sampler")

    def sample(self) -> None:
        for node, conn in self.conns.items():
            for kind, count in conn.execute(QUERY, (self.ignore,)).fetchall():
                self.most[node][kind] = max(self.most[node].get(kind, 0), int(count))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except psycopg.Error as exc:  # a node going away ends the sampling, not the benchmark
                self.error = str(exc).strip().splitlines()[0]
                return

    def __enter__(self) -> BackendSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.conns.values():
            conn.close()
