"""The three systems every benchmark compares, set up side by side on this machine for one run.

* ``postgresql``: one plain PostgreSQL 15 node; the tables are ordinary tables.
* ``postgres_fdw``: two plain nodes; on the coordinator (n1) each sharded table is hash-partitioned, the
  even partitions local and the odd ones postgres_fdw foreign tables on n2 (``async_capable``, a large
  ``fetch_size``, ``use_remote_estimate`` off); tables that shoal makes global stay plain tables on the
  coordinator only (every query runs there).
* ``shoal``: a 2-node shoal cluster (``shoal.cluster.Cluster``), tables distributed with
  ``shoal.create_distributed_table`` and ``shoal.create_global_table``.

Every node gets the same postgresql.conf tuning (``TUNING``; durability is off, as said in every report).
Ports are fixed, below the kernel's ephemeral range and away from the test suite's (26100-28999 with the
multiplexer and metrics ports): 29100 (postgresql), 29200-29201 (postgres_fdw), 29300-29301 (shoal, whose
multiplexers take +1000 and metrics +2000), 29400-29401 (the transport benchmark's cluster).
Benchmarks load a plain table on the first node and then call ``distribute`` / ``make_global``, so the same
rows end up in the same partitions on both sharded systems.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import fdw_layout
from bench.pgnode import PgNode
from shoal import osuser
from shoal.cluster import Cluster, port_in_use
from shoal.multiplexer.config import METRICS_PORT_OFFSET, MUX_PORT_OFFSET

Progress = Callable[[str], None]

# The same on every node of every system.  fsync, synchronous_commit and full_page_writes are off: the
# numbers are about CPU and round trips, not about this machine's disk.
TUNING: dict[str, str | int] = {
    "shared_buffers": "1GB",
    "max_connections": 300,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "jit": "off",
    "max_parallel_workers_per_gather": 0,
    "max_prepared_transactions": 64,  # shoal's two-phase commit needs them; harmless elsewhere
    "timezone": "UTC",
}
TUNING_NOTE = ("durability off on every node (fsync, synchronous_commit and full_page_writes off): "
               "benchmark settings, never for data you keep")

PORTS = {"postgresql": 29100, "postgres_fdw": 29200, "shoal": 29300, "transport": 29400}
SYSTEM_NAMES = ("postgresql", "postgres_fdw", "shoal")
FDW_SERVER = "n2"
# postgres_fdw's server options: async scans, large fetches (the transport benchmark found 10000 twice as
# fast as the default 100 for bulk reads), batched inserts, local cost estimates.
FDW_OPTIONS = {"async_capable": "true", "fetch_size": "10000", "batch_size": "1000",
               "use_remote_estimate": "false"}


class SystemUnavailable(RuntimeError):
    """The system cannot run here (e.g. the installed shoal extension lacks a function)."""


@dataclass
class NodeInfo:
    name: str
    port: int
    conninfo: str


@dataclass
class System(ABC):
    """One system under test: its nodes, and how it shards and replicates a loaded table."""

    name: str
    workdir: Path
    port: int
    nodes: list[NodeInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    placement: dict[str, str] = field(default_factory=dict)  # partition -> node name

    sharded = False

    @abstractmethod
    def up(self, progress: Progress) -> None:
        """Create and start the nodes (fresh), with TUNING."""

    @abstractmethod
    def down(self) -> None:
        """Stop every node this object started; never raises."""

    def distribute(self, table: str, column: str, partitions: int, colocate_with: str | None = None) -> None:
        """Shard the loaded plain table `table` on `column` (nothing to do on one node)."""
        return None

    def make_global(self, table: str) -> None:
        """Make `table` readable everywhere (nothing to do on one node)."""
        return None

    @property
    def coordinator(self) -> NodeInfo:
        return self.nodes[0]

    def connect(self, node: int = 0, **kwargs: Any) -> psycopg.Connection[Any]:
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.nodes[node].conninfo, **kwargs)

    def terminate_sessions(self) -> int:
        """End every client session on every node but the caller's own (after a run that hung, so that
        the next one starts clean); returns how many were ended."""
        ended = 0
        for i in range(len(self.nodes)):
            with contextlib.suppress(psycopg.Error), self.connect(i) as conn:
                ended += sum(1 for (ok,) in conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()") if ok)
        return ended

    def node_of(self, partition: str) -> str:
        """The node holding a partition (or the coordinator for an unpartitioned table)."""
        return self.placement.get(partition, self.coordinator.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": [vars(n) for n in self.nodes], "notes": self.notes,
                "placement": dict(sorted(self.placement.items()))}

    def _check_ports(self, ports: list[int]) -> None:
        busy = [p for p in ports if port_in_use(p)]
        if busy:
            raise SystemUnavailable(f"{self.name}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 are "
                                    f"in use (another benchmark running, or left over?)")


def _plain_node(name: str, directory: Path, port: int) -> PgNode:
    return PgNode(name, directory, port, TUNING)


@dataclass
class PlainSystem(System):
    """One plain PostgreSQL node."""

    _node: PgNode | None = None

    def up(self, progress: Progress) -> None:
        self._check_ports([self.port])
        self._node = _plain_node("n1", self.workdir / "n1", self.port)
        progress(f"{self.name}: initdb and start n1 on port {self.port}")
        self._node.init()
        self._node.start()
        self.nodes = [NodeInfo("n1", self.port, self._node.conninfo)]

    def down(self) -> None:
        if self._node is not None:
            self._node.stop()


@dataclass
class PgFdwSystem(System):
    """Two plain nodes; the coordinator n1 reaches n2's partitions through postgres_fdw."""

    _pg: list[PgNode] = field(default_factory=list)
    sharded = True

    def up(self, progress: Progress) -> None:
        self._check_ports([self.port, self.port + 1])
        for i in range(2):
            node = _plain_node(f"n{i + 1}", self.workdir / f"n{i + 1}", self.port + i)
            self._pg.append(node)
            progress(f"{self.name}: initdb and start {node.name} on port {node.port}")
            node.init()
            node.start()
        self.nodes = [NodeInfo(n.name, self.port + i, n.conninfo) for i, n in enumerate(self._pg)]
        options = ", ".join(f"{k} '{v}'" for k, v in {"host": "127.0.0.1", "port": str(self.port + 1),
                                                       "dbname": "postgres", **FDW_OPTIONS}.items())
        with self.connect(0) as conn:
            conn.execute("CREATE EXTENSION postgres_fdw")
            conn.execute(f"CREATE SERVER {FDW_SERVER} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({options})")
            conn.execute(f"CREATE USER MAPPING FOR PUBLIC SERVER {FDW_SERVER} OPTIONS (user 'postgres')")
        self.notes.append(f"postgres_fdw server options: {options}")
        self.notes.append("global tables (TPROC-C's item) are plain tables on the coordinator n1 only: "
                          "every statement runs there")

    def down(self) -> None:
        for node in self._pg:
            node.stop()

    def distribute(self, table: str, column: str, partitions: int, colocate_with: str | None = None) -> None:
        with self.connect(0) as coord, self.connect(1) as remote:
            fdw_layout.distribute(coord, remote, FDW_SERVER, table, column, partitions)
        for r in range(partitions):
            node = self.nodes[fdw_layout.node_of_remainder(r)]
            self.placement[fdw_layout.partition_name(table, r)] = node.name


@dataclass
class ShoalSystem(System):
    """A 2-node shoal cluster started with ``shoal.cluster.Cluster.up``."""

    _cluster: Cluster | None = None
    sharded = True

    DISTRIBUTE = "shoal.create_distributed_table(regclass,name,integer,regclass)"
    GLOBAL = "shoal.create_global_table(regclass)"

    def up(self, progress: Progress) -> None:
        ports = [self.port + i + off for i in (0, 1) for off in (0, MUX_PORT_OFFSET, METRICS_PORT_OFFSET)]
        self._check_ports(ports)
        directory = self.workdir / "cluster"
        self._cluster = Cluster(directory)
        progress(f"{self.name}: shoal up --nodes 2 --port {self.port} --dir {directory}")
        self._cluster.up(nodes=2, port=self.port, progress=lambda m: progress(f"{self.name}:   {m}"))
        self.nodes = [NodeInfo(n.name, n.port, n.conninfo) for n in self._cluster.nodes]
        # ALTER SYSTEM wins over shoal.conf (postgresql.auto.conf is read last); shared_buffers needs a
        # restart, which `shoal up` of a stopped cluster does.
        for i in range(len(self.nodes)):
            with self.connect(i) as conn:
                for name, value in TUNING.items():
                    conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        progress(f"{self.name}: restarting with the benchmark settings")
        self._cluster.down()
        self._cluster.up(progress=lambda m: progress(f"{self.name}:   {m}"))
        with self.connect(0) as conn:
            missing = [f for f in (self.DISTRIBUTE, self.GLOBAL)
                       if conn.execute("SELECT to_regprocedure(%s)", (f,)).fetchone()[0] is None]
            workers = conn.execute("SHOW shoal.workers").fetchone()[0]
        self.notes.append(f"shoal.workers = {workers}")
        if missing:
            raise SystemUnavailable(f"the installed shoal extension has no {' and no '.join(missing)}")

    def down(self) -> None:
        if self._cluster is not None and self._cluster.exists():
            with contextlib.suppress(Exception):
                self._cluster.down()

    def distribute(self, table: str, column: str, partitions: int, colocate_with: str | None = None) -> None:
        with self.connect(0) as conn:
            conn.execute("SELECT shoal.create_distributed_table(%s::regclass, %s, %s, %s::regclass)",
                         (table, column, partitions, colocate_with))
            self._read_placement(conn)

    def make_global(self, table: str) -> None:
        with self.connect(0) as conn:
            conn.execute("SELECT shoal.create_global_table(%s::regclass)", (table,))

    def _read_placement(self, conn: psycopg.Connection[Any]) -> None:
        """partition -> node from shoal.partitions, whatever its exact column names."""
        cur = conn.execute("SELECT * FROM shoal.partitions")
        names = [c.name for c in cur.description or []]
        node_col = next((i for i, c in enumerate(names) if "node" in c), None)
        part_col = next((i for i, c in enumerate(names) if "partition" in c), None)
        if node_col is None or part_col is None:
            return
        for row in cur.fetchall():
            self.placement[str(row[part_col]).split(".")[-1]] = str(row[node_col])


def make(name: str, workdir: Path) -> System:
    """A (not yet started) system by name, with its fixed port and a directory of its own."""
    directory = workdir / name
    classes: dict[str, type[System]] = {"postgresql": PlainSystem, "postgres_fdw": PgFdwSystem,
                                        "shoal": ShoalSystem}
    return classes[name](name=name, workdir=directory, port=PORTS[name])


def make_workdir(prefix: str = "shoal-bench-") -> Path:
    """A fresh world-readable directory under /tmp owned by the servers' OS user."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    osuser.chown_to(path, osuser.service_user())
    return path


@contextlib.contextmanager
def running(names: list[str], workdir: Path, progress: Progress) -> Iterator[dict[str, System | Exception]]:
    """Start the named systems; yield name -> System (or the exception that kept it from starting);
    stop them all on the way out, whatever happens."""
    started: dict[str, System | Exception] = {}
    systems: list[System] = []
    try:
        for name in names:
            system = make(name, workdir)
            systems.append(system)
            try:
                system.up(progress)
                started[name] = system
            except Exception as exc:  # one system failing must not stop the others
                progress(f"{name}: NOT AVAILABLE: {type(exc).__name__}: {exc}")
                started[name] = exc
                system.down()
        yield started
    finally:
        for system in systems:
            progress(f"{system.name}: stopping")
            system.down()
