"""A local shoal cluster: N PostgreSQL 15 nodes in one directory, managed by `shoal up/down/status/destroy`.

Layout of a cluster directory DIR:

    DIR/shoal.json        what the cluster is: service user, nodes and their ports
    DIR/shoal.lock        serialises concurrent `shoal` commands on the same DIR
    DIR/n1/data/          the node's data directory (initdb -U postgres, trust authentication)
    DIR/n1/server.log     the node's server log
    DIR/n1/.s.PGSQL.5440  the node's Unix socket (in its own directory: no /var/run permission issues)

This module does the work and reports progress through a callback; printing is the command line's job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from shoal import osuser
from shoal.errors import ShoalError
from shoal.multiplexer.config import new_cluster_secret
from shoal.pgbin import PG_MAJOR, major_version, pg_bin

STATE_FILE = "shoal.json"
KEY_FILE = "cluster.key"  # the cluster's secret: every node's multiplexer proves it to the others
LOCK_FILE = "shoal.lock"
STATE_VERSION = 1
HOST = "127.0.0.1"
SUPERUSER = "postgres"  # initdb -U: the role is `postgres` whichever OS user runs the servers
DATABASE = "postgres"
DEFAULT_NODES = 3
DEFAULT_PORT = 5440
# The extension hooks the planner and starts the multiplexer background worker: it must be preloaded.
PRELOAD = "shoal"
# Two-phase commit of distributed transactions needs prepared transactions.
MAX_PREPARED_TRANSACTIONS = 64
# the multiplexer and shoal.workers (8 by default) workers are background workers, on top of
# PostgreSQL's own (parallel query, logical replication): 8, the default, is too few
MAX_WORKER_PROCESSES = 32
START_TIMEOUT_S = 120
CHANNEL_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 10
# sizeof(sockaddr_un.sun_path) on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107
CONF_FILE = "shoal.conf"
CONF_INCLUDE = f"include_if_exists = '{CONF_FILE}'"
INSTALL_HINT = "build and install the extension with `make install` in the shoal repository"

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class Node:
    """One PostgreSQL server of the cluster."""

    name: str
    port: int

    @property
    def conninfo(self) -> str:
        """libpq connection string for clients (and for the other nodes)."""
        return f"host={HOST} port={self.port} dbname={DATABASE} user={SUPERUSER}"


@dataclass
class ResultTable:
    """Rows of a query, kept with their column names so that any view can be shown as a table."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass
class NodeStatus:
    node: Node
    pid: int | None  # of the postmaster, when it runs
    accepting: bool  # answers SQL
    members: int | None = None  # rows in shoal.nodes on this node, when it has the view


@dataclass
class ClusterStatus:
    directory: Path
    service_user: str
    nodes: list[NodeStatus]
    partitions: ResultTable | None = None  # per node summary
    multiplexers: ResultTable | None = None  # shoal.mux_stats of every running node
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why


def port_in_use(port: int) -> bool:
    """Whether something already listens on HOST:port (so PostgreSQL could not bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # PostgreSQL sets SO_REUSEADDR too: a port in TIME_WAIT is free for it, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def connect(node: Node) -> psycopg.Connection[Any]:
    """An autocommit superuser connection to `node`."""
    try:
        return psycopg.connect(node.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShoalError(f"cannot connect to node {node.name} ({node.conninfo}): {first}",
                         "check `shoal status` and the node's server.log") from exc


class Cluster:
    """The cluster stored in one directory (which may not exist yet)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).absolute()
        self.service_user: str | None = None
        self.nodes: list[Node] = []
        self._load()

    # -- state ------------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.directory / STATE_FILE

    def exists(self) -> bool:
        return self.state_file.is_file()

    def _load(self) -> None:
        if not self.exists():
            self.service_user, self.nodes = None, []
            return
        try:
            state = json.loads(self.state_file.read_text())
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown version {state.get('version')!r}")
            self.service_user = str(state["service_user"])
            self.nodes = [Node(str(n["name"]), int(n["port"])) for n in state["nodes"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShoalError(f"cannot read cluster file {self.state_file}: {exc}",
                             "it was not written by this version of shoal; `shoal destroy` and start "
                             "again, or fix the file") from exc

    def _save(self) -> None:
        assert self.service_user is not None
        state = {
            "version": STATE_VERSION,
            "service_user": self.service_user,
            "host": HOST,
            "nodes": [{"name": n.name, "port": n.port, "conninfo": n.conninfo} for n in self.nodes],
        }
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.chmod(0o644)
        osuser.chown_to(tmp, self.service_user)
        tmp.replace(self.state_file)

    def _require(self) -> str:
        """The service user of an existing cluster, after checking we may act as it."""
        if not self.exists():
            raise ShoalError(f"no shoal cluster in {self.directory}",
                             f"start one with `shoal up --dir {self.directory}`")
        assert self.service_user is not None
        osuser.as_user_argv(self.service_user, [])  # raises when we cannot act as that user
        return self.service_user

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the cluster's lock (the directory must exist) and reload its state under it."""
        path = self.directory / LOCK_FILE
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            if created and self.service_user:
                osuser.chown_to(path, self.service_user)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.exists():
                self._load()
            yield
        finally:
            os.close(fd)

    # -- paths --------------------------------------------------------------------------------------

    def node_dir(self, node: Node) -> Path:
        return self.directory / node.name

    def data_dir(self, node: Node) -> Path:
        return self.node_dir(node) / "data"

    def log_file(self, node: Node) -> Path:
        return self.node_dir(node) / "server.log"

    def cluster_secret(self) -> str:
        """The cluster's secret key, created with the cluster; readable by the servers' user only."""
        path = self.directory / KEY_FILE
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(new_cluster_secret() + "\n")
            tmp.chmod(0o600)
            if self.service_user:
                osuser.chown_to(tmp, self.service_user)
            tmp.replace(path)
        return path.read_text().strip()

    def node_settings(self, node: Node) -> dict[str, str | int]:
        """The postgresql.conf settings shoal owns (written to data/shoal.conf on every `up`)."""
        return {
            "shoal.node_name": node.name,
            "shoal.cluster_secret": self.cluster_secret(),
            "port": node.port,
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.node_dir(node)),
            "shared_preload_libraries": PRELOAD,
            "max_prepared_transactions": MAX_PREPARED_TRANSACTIONS,
            "max_worker_processes": MAX_WORKER_PROCESSES,
            "cluster_name": f"shoal-{node.name}",
            # pg_ctl -l sends the server's stderr to server.log; no collector needed for a dev cluster.
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] %q%u@%d ",
        }

    # -- process state ------------------------------------------------------------------------------

    def pid(self, node: Node) -> int | None:
        """The postmaster's pid when the node runs (from postmaster.pid, like pg_ctl status)."""
        try:
            first = (self.data_dir(node) / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # stale file after a crash; pg_ctl start copes with it
        except PermissionError:
            pass  # alive, owned by another user
        return pid

    # -- up -----------------------------------------------------------------------------------------

    def up(self, nodes: int | None = None, port: int | None = None,
           progress: Progress = _quiet) -> list[Node]:
        """Create (if absent) and start the cluster, load the extension on every node and join the nodes
        into one cluster. Returns the nodes. Safe to repeat."""
        bindir = pg_bin()
        new = not self.exists()
        if new:
            self._check_new_directory()
            self.service_user = osuser.service_user()
            if osuser.is_root():
                osuser.check_reachable(self.directory, self.service_user)
        else:
            self._require()
        assert self.service_user is not None
        self._check_startable(self._plan(nodes, port))
        if new:
            if major_version(bindir) != PG_MAJOR:
                raise ShoalError(f"{bindir} holds PostgreSQL {major_version(bindir)}, not {PG_MAJOR}",
                                 f"install postgresql-{PG_MAJOR} or point PG_BIN at it")
            progress(f"creating cluster directory {self.directory} (servers run as OS user "
                     f"{self.service_user!r})")
            osuser.make_dir_for(self.directory, self.service_user)
        with self._locked():
            # Another `shoal up` may have created or grown the cluster while we waited for the lock.
            self.nodes = self._plan(nodes, port)
            self._save()
            for node in self.nodes:
                self._initdb(bindir, node, progress)
                self._write_settings(node, progress)
            for node in self.nodes:
                self._start(bindir, node, progress)
            for node in self.nodes:
                self._create_extension(node, progress)
            self._join(progress)
            self._wait_for_channels(progress)
            self._share_tables(progress)
        return list(self.nodes)

    def _check_new_directory(self) -> None:
        # Never take over a directory holding something else: destroy would later delete it.
        if self.directory.exists():
            if not self.directory.is_dir():
                raise ShoalError(f"{self.directory} exists and is not a directory",
                                 "choose another --dir")
            if any(self.directory.iterdir()):
                raise ShoalError(f"{self.directory} exists, is not empty and holds no shoal cluster",
                                 "choose a new or empty --dir")

    def _plan(self, nodes: int | None, port: int | None) -> list[Node]:
        """The node list after this `up`: the recorded one, possibly grown to `nodes` nodes."""
        if nodes is not None and nodes < 1:
            raise ShoalError(f"--nodes must be at least 1, not {nodes}", "a cluster has one node or more")
        if not self.nodes:
            count = nodes if nodes is not None else DEFAULT_NODES
            base = port if port is not None else DEFAULT_PORT
        else:
            base = self.nodes[0].port
            count = len(self.nodes) if nodes is None else nodes
            if port is not None and port != base:
                raise ShoalError(f"the cluster in {self.directory} already uses ports from {base}",
                                 "leave out --port, or `shoal destroy` it first")
            if count < len(self.nodes):
                raise ShoalError(f"the cluster in {self.directory} has {len(self.nodes)} nodes; "
                                 f"`shoal up` does not remove nodes",
                                 "leave out --nodes, or `shoal destroy` it and start again")
        if base < 1024 or base + count - 1 > 65535:
            raise ShoalError(f"ports {base}..{base + count - 1} are out of range",
                             "use --port between 1024 and 65535 - N")
        planned = list(self.nodes)
        for i in range(len(planned), count):
            planned.append(Node(f"n{i + 1}", base + i))
        return planned

    def _check_startable(self, planned: list[Node]) -> None:
        """Fail before touching anything when a node that must start could not."""
        for node in planned:
            if self.pid(node) is not None:
                continue
            if port_in_use(node.port):
                if self.exists():
                    hint = (f"stop whatever listens there (see `ss -ltnp 'sport = :{node.port}'`), or "
                            f"`shoal destroy --dir {self.directory}` and start it again with another --port")
                else:
                    hint = "choose other ports with --port"
                raise ShoalError(f"port {node.port} on {HOST} (node {node.name}) is already in use", hint)
            sock = self.node_dir(node) / f".s.PGSQL.{node.port}"
            if len(str(sock)) > MAX_SOCKET_PATH:
                raise ShoalError(f"the path {sock} is too long for a Unix socket",
                                 "use a shorter --dir")

    def _run(self, argv: list[str], what: str, node: Node, hint: str) -> subprocess.CompletedProcess[str]:
        assert self.service_user is not None
        try:
            return osuser.run_as(self.service_user, argv)
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise ShoalError(f"{what} failed for node {node.name}: {detail[-1] if detail else exc}",
                             hint) from exc

    def _initdb(self, bindir: Path, node: Node, progress: Progress) -> None:
        assert self.service_user is not None
        data = self.data_dir(node)
        if (data / "PG_VERSION").is_file():
            return
        progress(f"initdb {node.name} in {data}")
        osuser.make_dir_for(self.node_dir(node), self.service_user)
        if data.exists():
            shutil.rmtree(data)  # left over by an interrupted initdb
        self._run([str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER,
                   "--auth-local=trust", "--auth-host=trust", "--encoding=UTF8", "--locale=C.UTF-8",
                   "--no-instructions"], "initdb", node,
                  "run `shoal up` again once the cause is fixed (it redoes an unfinished initdb)")

    def _write_settings(self, node: Node, progress: Progress) -> None:
        assert self.service_user is not None
        data = self.data_dir(node)
        lines = ["# Written by `shoal up` each time it runs: do not edit. Override with ALTER SYSTEM."]
        for name, value in self.node_settings(node).items():
            shown = value if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"
            lines.append(f"{name} = {shown}")
        text = "\n".join(lines) + "\n"
        conf = data / CONF_FILE
        if conf.is_file() and conf.read_text() == text:
            return
        if conf.is_file() and self.pid(node) is not None:
            progress(f"settings of {node.name} changed; they apply after `shoal down` and `shoal up`")
        conf.write_text(text)
        conf.chmod(0o600)
        osuser.chown_to(conf, self.service_user)
        main_conf = data / "postgresql.conf"
        if CONF_INCLUDE not in main_conf.read_text().splitlines():
            with main_conf.open("a") as f:
                f.write(f"\n# shoal's own settings (last, so that they win over the ones above)\n"
                        f"{CONF_INCLUDE}\n")

    def _start(self, bindir: Path, node: Node, progress: Progress) -> None:
        if self.pid(node) is not None:
            return
        progress(f"starting {node.name} on port {node.port}")
        log = self.log_file(node)
        offset = log.stat().st_size if log.exists() else 0
        assert self.service_user is not None
        result = osuser.run_as(self.service_user,
                               [str(bindir / "pg_ctl"), "start", "-D", str(self.data_dir(node)),
                                "-l", str(log), "-w", "-t", str(START_TIMEOUT_S)], check=False)
        if result.returncode != 0:
            raise self._start_failure(node, log, offset, result)

    def _start_failure(self, node: Node, log: Path, offset: int,
                       result: subprocess.CompletedProcess[str]) -> ShoalError:
        """Turn a failed pg_ctl start into the server's own reason, with a hint."""
        reason = ""
        try:
            with log.open(errors="replace") as f:
                f.seek(offset)
                fresh = f.read().splitlines()
            fatal = [i for i, ln in enumerate(fresh) if "FATAL:" in ln or "PANIC:" in ln]
            if fatal:
                last = fatal[-1]
                reason = _log_message(fresh[last])
                if "contains errors" in reason and last > 0:
                    # The offending setting is named on the line before ("invalid value for ...").
                    reason = f"{_log_message(fresh[last - 1])} ({reason})"
        except OSError:
            pass
        if not reason:
            out = (result.stderr or result.stdout).strip().splitlines()
            reason = out[-1] if out else f"pg_ctl exited with {result.returncode}"
        hint = f"see {log}"
        if f'"{PRELOAD}"' in reason and "file" in reason:
            hint = f"the shoal extension is not installed for PostgreSQL {PG_MAJOR}: {INSTALL_HINT}"
        elif "already in use" in reason:
            hint = "choose other ports with --port (in a new --dir)"
        return ShoalError(f"node {node.name} did not start: {reason}", hint)

    def _create_extension(self, node: Node, progress: Progress) -> None:
        with connect(node) as conn:
            installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'shoal'").fetchone()
            if installed:
                return
            progress(f"creating extension shoal on {node.name}")
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS shoal")
            except psycopg.Error as exc:
                raise ShoalError(f"CREATE EXTENSION shoal failed on {node.name}: {_pg_message(exc)}",
                                 INSTALL_HINT) from exc

    def _join(self, progress: Progress) -> None:
        """Register every node on every node (shoal.add_node for each one missing from shoal.nodes)."""
        for target in self.nodes:
            with connect(target) as conn:
                has_api = conn.execute(
                    "SELECT to_regprocedure('shoal.add_node(text,text,integer)') IS NOT NULL"
                    "   AND to_regclass('shoal.nodes') IS NOT NULL").fetchone()
                if not (has_api and has_api[0]):
                    raise ShoalError(
                        "the installed shoal extension has no shoal.add_node(text, text, integer) and "
                        "shoal.nodes, so the nodes cannot be joined (they are running)",
                        f"install an up-to-date extension ({INSTALL_HINT}), then `shoal down` and "
                        f"`shoal up` again")
                known = {row[0] for row in conn.execute("SELECT name FROM shoal.nodes")}
                for node in self.nodes:
                    if node.name in known:
                        continue
                    progress(f"registering {node.name} on {target.name}")
                    try:
                        conn.execute("SELECT shoal.add_node(%s, %s)", (node.name, node.conninfo))
                    except psycopg.Error as exc:
                        raise ShoalError(f"shoal.add_node({node.name!r}) failed on {target.name}: "
                                         f"{_pg_message(exc)}", f"see {self.log_file(target)}") from exc

    def _wait_for_channels(self, progress: Progress) -> None:
        """Return once every node's multiplexer has its channel to every other node up, so that the
        first query after `shoal up` does not meet a channel still connecting."""
        if len(self.nodes) < 2:
            return
        deadline = time.monotonic() + CHANNEL_TIMEOUT_S
        waiting = list(self.nodes)
        announced = False
        while waiting:
            node = waiting[0]
            try:
                with connect(node) as conn:
                    down = [row[0] for row in conn.execute(
                        "SELECT peer FROM shoal.mux_stats WHERE peer <> 'total' AND state <> 'up'")]
                    peers = conn.execute("SELECT count(*) FROM shoal.mux_stats WHERE peer <> 'total'"
                                         ).fetchone()[0]
                if not down and peers == len(self.nodes) - 1:
                    waiting.pop(0)
                    continue
            except psycopg.Error:
                down = ["?"]
            if time.monotonic() > deadline:
                raise ShoalError(f"the multiplexer of {node.name} has no channel to {', '.join(down)}",
                                 f"see {self.log_file(node)}; `shoal status` shows the channels")
            if not announced:
                progress("waiting for the multiplexers' channels")
                announced = True
            time.sleep(0.2)

    def _share_tables(self, progress: Progress) -> None:
        """Give nodes that joined after shoal tables were made (a grown cluster) those tables."""
        if len(self.nodes) < 2:
            return
        source = self.nodes[0]
        with connect(source) as conn:
            if not conn.execute("SELECT to_regprocedure('shoal.sync_node(text)') IS NOT NULL").fetchone()[0]:
                return  # an extension from before nodes could join later: nothing to share from it
            for node in self.nodes[1:]:
                try:
                    created = conn.execute("SELECT shoal.sync_node(%s)", (node.name,)).fetchone()[0]
                except psycopg.Error as exc:
                    raise ShoalError(f"giving {node.name} the shoal tables of {source.name} failed: "
                                     f"{_pg_message(exc)}", f"see {self.log_file(node)}") from exc
                if created:
                    progress(f"created {created} shoal table(s) on {node.name}")

    # -- down / destroy -----------------------------------------------------------------------------

    def down(self, progress: Progress = _quiet) -> None:
        """Stop every node (fast shutdown: running transactions are rolled back)."""
        self._require()
        bindir = pg_bin()
        with self._locked():
            self._stop_all(bindir, progress)

    def _stop_all(self, bindir: Path, progress: Progress) -> None:
        for node in self.nodes:
            if self.pid(node) is None:
                progress(f"{node.name} is not running")
                continue
            progress(f"stopping {node.name}")
            self._run([str(bindir / "pg_ctl"), "stop", "-D", str(self.data_dir(node)), "-m", "fast",
                       "-w", "-t", str(START_TIMEOUT_S)], "pg_ctl stop", node,
                      f"see {self.log_file(node)}")

    def destroy(self, progress: Progress = _quiet) -> bool:
        """Stop every node and delete the cluster. Returns False when there was no cluster."""
        if not self.directory.exists():
            return False
        self._require()
        bindir = pg_bin()
        with self._locked():
            self._stop_all(bindir, progress)
            progress(f"deleting {self.directory}")
            for node in self.nodes:
                if self.node_dir(node).exists():  # a node whose initdb never ran has none
                    shutil.rmtree(self.node_dir(node))
            self.state_file.unlink()
            (self.directory / KEY_FILE).unlink(missing_ok=True)
            (self.directory / LOCK_FILE).unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            progress(f"kept {self.directory}: it holds files shoal did not create")
        self.nodes = []
        return True

    # -- status -------------------------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        """Nodes (running or not), partitions per node and multiplexers, as far as they can be seen."""
        if not self.exists():
            raise ShoalError(f"no shoal cluster in {self.directory}",
                             f"start one with `shoal up --dir {self.directory}`")
        assert self.service_user is not None
        result = ClusterStatus(self.directory, self.service_user, [])
        mux_rows: list[tuple[Any, ...]] = []
        mux_columns: list[str] = []
        partitions: ResultTable | None = None
        missing: set[str] = set()
        for node in self.nodes:
            st = NodeStatus(node, self.pid(node), accepting=False)
            result.nodes.append(st)
            if st.pid is None and not port_in_use(node.port):
                continue
            try:
                conn = psycopg.connect(node.conninfo, autocommit=True, connect_timeout=3)
            except psycopg.Error:
                continue
            with conn:
                st.accepting = True
                members = _read_view(conn, "shoal.nodes", node, result.notes, missing)
                st.members = len(members.rows) if members is not None else None
                if partitions is None:  # symmetric: any node's view describes the whole cluster
                    table = _read_view(conn, "shoal.partitions", node, result.notes, missing)
                    partitions = _partition_summary(table) if table is not None else None
                table = _read_view(conn, "shoal.mux_stats", node, result.notes, missing)
                if table is not None:
                    mux_columns = ["node", *table.columns]
                    mux_rows.extend((node.name, *row) for row in table.rows)
        result.partitions = partitions
        if mux_columns:
            result.multiplexers = ResultTable(mux_columns, mux_rows)
        if not any(st.accepting for st in result.nodes):
            result.notes.append("no node is running: partitions and multiplexers are not shown")
        else:
            for name in sorted(missing):
                result.notes.append(f"{name} is not available (extension not created, or too old)")
        return result


def _log_message(line: str) -> str:
    """The message of a server log line: what follows "LOG:  ", "FATAL:  " etc."""
    return line.split(":  ", 1)[-1].strip()


def _pg_message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return primary or str(exc).strip().splitlines()[0]


def _has_relation(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _read_view(conn: psycopg.Connection[Any], name: str, node: Node, notes: list[str],
               missing: set[str]) -> ResultTable | None:
    """The rows of view `name` on `node`; None when the view does not exist (its name is added to
    `missing`) or cannot be read (a note says why), so that status degrades instead of failing."""
    if not _has_relation(conn, name):
        missing.add(name)
        return None
    try:
        return _select_all(conn, name)
    except psycopg.Error as exc:
        notes.append(f"cannot read {name} on {node.name}: {_pg_message(exc)}")
        return None


def _select_all(conn: psycopg.Connection[Any], name: str) -> ResultTable:
    schema, rel = name.split(".")
    cur = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, rel)))
    columns = [c.name for c in cur.description or []]
    return ResultTable(columns, list(cur.fetchall()))


def _partition_summary(table: ResultTable) -> ResultTable:
    """Partitions and distributed tables per node, from shoal.partitions (whatever its exact columns:
    the node is the column named like 'node', the table the first other column)."""
    node_col = next((i for i, c in enumerate(table.columns) if c in ("node", "node_name")), None)
    if node_col is None:
        node_col = next((i for i, c in enumerate(table.columns) if "node" in c), None)
    if node_col is None:
        return ResultTable(["partitions"], [(len(table.rows),)])
    rel_col = next(i for i in range(len(table.columns)) if i != node_col) if len(table.columns) > 1 else None
    per_node: dict[str, tuple[int, set[Any]]] = {}
    for row in table.rows:
        count, rels = per_node.get(str(row[node_col]), (0, set()))
        if rel_col is not None:
            rels.add(row[rel_col])
        per_node[str(row[node_col])] = (count + 1, rels)
    return ResultTable(["node", "partitions", "tables"],
                       [(name, count, len(rels)) for name, (count, rels) in sorted(per_node.items())])
