"""Helpers of the tests on real shoal clusters: a throwaway cluster, one statement on one node, and
where rows live."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from shoal.cluster import Cluster, Node


@contextlib.contextmanager
def running_cluster(prefix: str, nodes: int, port: int) -> Iterator[Cluster]:
    """A cluster of ``nodes`` nodes from ``port`` on, in a short temporary directory (Unix socket
    paths are limited to 107 bytes), destroyed afterwards whatever happened."""
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = Cluster(parent / "c")
    try:
        cluster.up(nodes=nodes, port=port)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.destroy()
        shutil.rmtree(parent, ignore_errors=True)


def sql(node: Node, query: str, params: tuple = (), **settings: str) -> list[tuple]:
    """Run one statement on ``node`` in autocommit; ``settings`` are session settings, with ``__``
    for the dot (``shoal__crash_point="after_prepare"``)."""
    with psycopg.connect(node.conninfo, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name.replace("__", "."), value))
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def local_ids(node: Node, table: str = "acct") -> list[int]:
    """The ids of ``table``'s rows whose partition lives on ``node``."""
    return [r[0] for r in sql(node, f"SELECT id FROM {table} t JOIN shoal.partitions p "
                                    "ON p.partition_name::regclass = t.tableoid "
                                    "WHERE p.is_local ORDER BY id")]


def end_workers_in_blocks(node: Node) -> int:
    """Terminate the shoal workers of ``node`` that hold a transaction block, and wait for them to
    exit (its multiplexer starts others); how many there were."""
    ended = sql(node, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE backend_type "
                      "= 'shoal worker' AND state ~ '^idle in transaction'")
    time.sleep(0.3)  # for the multiplexer to see them go
    return len(ended)
