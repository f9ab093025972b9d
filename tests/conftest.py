"""Shared fixtures of the FDW host tests: one PostgreSQL 15 server for the session, with the shoal
extension preloaded and ``shoal.python_path`` pointing at ``tests/handlers`` (the test handlers, which
run inside the server's backends), and per test a fresh connection and schema.

Test files that start clusters of their own use fixed ports from 26100 (each file its own hundred;
multiplexers listen at +1000, metrics at +2000): below the kernel's ephemeral range (32768-60999),
where any outgoing connection of the suite could be holding a port when a server tries to bind it.
"""

from __future__ import annotations

import getpass
import itertools
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
HANDLERS = HERE / "handlers"
PG_BIN_DEFAULT = "/usr/lib/postgresql/15/bin"

# the handlers' helper modules (calllog, memory...) are importable by the tests too
if str(HANDLERS) not in sys.path:
    sys.path.insert(0, str(HANDLERS))

import calllog  # noqa: E402

_counter = itertools.count(1)


class PgServer:
    """The session's server: how to reach it."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.host = "127.0.0.1"
        self.port: int = node.port
        self.user = getpass.getuser()
        self.data_dir = Path(node.data_dir)

    def connect(self, dbname: str = "postgres", autocommit: bool = True, **kwargs: Any) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname=dbname, autocommit=autocommit, **kwargs
        )

    def log_text(self) -> str:
        logs = sorted(self.data_dir.parent.glob("logs/*")) + sorted(self.data_dir.glob("log/*"))
        return "".join(p.read_text(errors="replace") for p in logs if p.is_file())


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """A PostgreSQL 15 server with shoal preloaded and the extension created in database postgres."""
    os.environ.setdefault("PG_BIN", PG_BIN_DEFAULT)
    from testgres import get_new_node

    base = tmp_path_factory.mktemp("pgnode")
    node = get_new_node(base_dir=str(base))
    try:
        node.init(initdb_params=["--encoding=UTF8", "--locale=C"], log_statement="none")
        node.append_conf(
            shared_preload_libraries="shoal",
            **{"shoal.python_path": str(HANDLERS)},
            max_connections=40,
            fsync="off",
            synchronous_commit="off",
            full_page_writes="off",
            unix_socket_directories=str(base),  # not /var/run/postgresql: any user may run this
            max_prepared_transactions=5,
            # no job workers: the multiplexer's are not what these tests are about (2 cores)
            **{"shoal.workers": 0},
            lc_messages="C",
            timezone="UTC",
        )
        node.start()
        server = PgServer(node)
        with server.connect() as conn:
            conn.execute("CREATE EXTENSION shoal")
            conn.execute("CREATE SERVER handlers FOREIGN DATA WRAPPER shoal_fdw")
        yield server
    finally:
        node.cleanup(release_resources=True)  # stops it too


class Db:
    """One test's connection to the server, its own schema, and a directory for files the handlers read
    or write (the server runs as the same OS user as pytest, so tmp_path suits it)."""

    def __init__(self, server: PgServer, conn: psycopg.Connection, schema: str, directory: Path) -> None:
        self.server = server
        self.conn = conn
        self.schema = schema
        self.dir = directory

    def execute(self, query: str, params: Sequence[Any] | None = None) -> list[tuple]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def one(self, query: str, params: Sequence[Any] | None = None) -> Any:
        rows = self.execute(query, params)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]

    def explain(self, query: str, params: Sequence[Any] | None = None, analyze: bool = False) -> str:
        options = "VERBOSE, COSTS OFF" + (", ANALYZE, TIMING OFF, SUMMARY OFF" if analyze else "")
        rows = self.execute(f"EXPLAIN ({options}) {query}", params)
        return "\n".join(r[0] for r in rows)

    @property
    def backend_pid(self) -> int:
        return int(self.one("SELECT pg_backend_pid()"))

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def write_pickle(self, name: str, value: Any) -> str:
        path = self.dir / name
        path.write_bytes(pickle.dumps(value))
        return str(path)

    def copy_binary(self, query: str) -> bytes:
        """PostgreSQL's own binary COPY output (header, tuples, trailer) of a query."""
        with self.conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT binary)") as copy:
            return b"".join(bytes(chunk) for chunk in copy)

    def log(self, name: str = "calls.log") -> list[dict[str, Any]]:
        return calllog.read(self.path(name))

    def foreign_table(self, relname: str, columns: str, wrapper: str, /, **options: Any) -> None:
        """CREATE FOREIGN TABLE relname (columns) with the handler class wrapper and these options."""
        opts = ", ".join(f"{k} {quote(str(v))}" for k, v in {"wrapper": wrapper, **options}.items())
        self.execute(f"CREATE FOREIGN TABLE {relname} ({columns}) SERVER handlers OPTIONS ({opts})")

    def memory_table(self, relname: str, columns: str, /, **options: Any) -> None:
        """A table of the memory handler; its data key (option name) is unique to this test."""
        options.setdefault("name", f"{self.schema}.{relname}")
        self.foreign_table(relname, columns, "memory.MemoryHandler", **options)


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect_db(server: PgServer, schema: str) -> psycopg.Connection:
    conn = server.connect()
    conn.execute(f"SET search_path = {schema}, public")
    return conn


@pytest.fixture
def db(pg: PgServer, tmp_path: Path) -> Iterator[Db]:
    """A new backend (so a fresh embedded interpreter) on its own schema, dropped afterwards."""
    schema = f"t{next(_counter)}"
    with pg.connect() as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    tmp_path.chmod(0o755)
    conn = connect_db(pg, schema)
    try:
        yield Db(pg, conn, schema, tmp_path)
    finally:
        conn.close()
        with pg.connect() as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
