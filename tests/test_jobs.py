"""extension/jobs.c and bgworker.c: the multiplexer's background processes and the jobs its workers run.

One server, with shoal preloaded, one worker, and the multiplexer and worker entry points pointed at
``tests/handlers/jobprobe.py``: a probe that calls ``_shoal_pg``'s job functions on request, over a
Unix socket.  Tuple data is compared byte for byte with PostgreSQL's own binary COPY.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
HANDLERS = HERE / "handlers"
COPY_HEADER = 19  # signature, flags, header extension length
COPY_TRAILER = 2  # int16 -1


class ProbeError(Exception):
    def __init__(self, type_name: str, text: str, attrs: dict[str, Any]) -> None:
        super().__init__(f"{type_name}: {text}")
        self.type_name = type_name
        self.text = text
        self.sqlstate = attrs.get("sqlstate")
        self.message = attrs.get("message")
        self.detail = attrs.get("detail")
        self.hint = attrs.get("hint")
        self.context = attrs.get("context")
        self.position = attrs.get("position")


class Probe:
    """The test's end of a jobprobe process's socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.connect(self.path)
                    break
                except OSError:
                    sock.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            sock.settimeout(60)
            self.sock = sock
        return self.sock

    def send(self, op: str, *args: Any, **kwargs: Any) -> None:
        body = pickle.dumps((op, args, kwargs))
        self._connect().sendall(struct.pack(">I", len(body)) + body)

    def _recv_exact(self, n: int) -> bytes:
        assert self.sock is not None
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the probe closed the connection")
            data += chunk
        return data

    def receive(self) -> Any:
        (size,) = struct.unpack(">I", self._recv_exact(4))
        reply = pickle.loads(self._recv_exact(size))
        if reply[0] == "exc":
            raise ProbeError(reply[1], reply[2], reply[3])
        return reply[1]

    def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        self.send(op, *args, **kwargs)
        return self.receive()

    def execute(self, sql: str, types: list[int] | None = None, params: list | None = None,
                binary: Any = False, role: str | None = None, **kwargs: Any) -> tuple[str, int, list]:
        return self.call("execute", sql, types or [], params or [], binary, role, **kwargs)

    def error(self, op: str, *args: Any, **kwargs: Any) -> ProbeError:
        with pytest.raises(ProbeError) as info:
            self.call(op, *args, **kwargs)
        return info.value

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Server:
    def __init__(self, node: Any, sockets: str) -> None:
        self.node = node
        self.sockets = sockets

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.node.port, dbname="postgres", autocommit=True,
                               user=_user())

    def rows(self, sql: str, params: tuple | None = None) -> list[tuple]:
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def copy_tuples(self, sql: str) -> bytes:
        """PostgreSQL's binary COPY of a query, without its header and trailer."""
        with self.connect() as conn, conn.cursor() as cur:
            with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)") as copy:
                data = b"".join(bytes(chunk) for chunk in copy)
        assert data[:11] == b"PGCOPY\n\xff\r\n\x00" and data[-2:] == b"\xff\xff"
        return data[COPY_HEADER:-COPY_TRAILER]

    def probe(self, name: str = "0") -> Probe:
        return Probe(f"{self.sockets}.{name}")


def _user() -> str:
    import getpass

    return getpass.getuser()


def start_node(base: Path, sockets: str, **conf: Any) -> Any:
    os.environ.setdefault("PG_BIN", "/usr/lib/postgresql/15/bin")
    from testgres import get_new_node

    node = get_new_node(base_dir=str(base))
    node.init(initdb_params=["--encoding=UTF8", "--locale=C"])
    settings = {
        "shared_preload_libraries": "shoal",
        "shoal.python_path": str(HANDLERS),
        "shoal.workers": 1,
        "shoal.worker_entry": "jobprobe:main",
        "shoal.mux_entry": "jobprobe:mux_main",
        "jobprobe.socket": sockets,
        "max_prepared_transactions": 5,
        "fsync": "off",
        "synchronous_commit": "off",
        "lc_messages": "C",
        "timezone": "UTC",
    }
    settings.update(conf)
    node.append_conf(**settings)
    node.start()
    return node


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    base = Path(tempfile.mkdtemp(prefix="shoal-jobs-"))
    sockets = str(base / "probe")  # short: Unix socket paths are limited
    node = start_node(base / "node", sockets)
    srv = Server(node, sockets)
    try:
        yield srv
    finally:
        node.cleanup(release_resources=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def probe(server: Server) -> Iterator[Probe]:
    p = server.probe("0")
    try:
        yield p
        # every test leaves the worker outside a transaction block
        if p.call("in_block"):
            p.call("rollback")
    finally:
        p.close()


def worker_pid(server: Server) -> int:
    rows = server.rows("SELECT pid FROM pg_stat_activity WHERE backend_type = 'shoal worker'")
    assert len(rows) == 1, rows
    return rows[0][0]


# -- processes ---------------------------------------------------------------------------------------


def test_the_multiplexer_and_the_workers_run(server: Server, probe: Probe) -> None:
    rows = server.rows("SELECT backend_type, datname FROM pg_stat_activity "
                       "WHERE backend_type LIKE 'shoal%' ORDER BY 1")
    assert rows == [("shoal multiplexer", "postgres"), ("shoal worker", "postgres")]
    assert probe.call("pid") == worker_pid(server)
    mux = server.probe("mux")
    try:
        assert mux.execute("SELECT 1::int")[:2] == ("SELECT 1", 1)  # the multiplexer may run jobs too
    finally:
        mux.close()


def test_settings(probe: Probe) -> None:
    assert probe.call("setting", "shoal.database") == "postgres"
    assert probe.call("setting", "shoal.workers") == "1"
    assert probe.call("setting", "shoal.mux_port") == "0"
    assert probe.call("setting", "shoal.metrics_port") == "0"
    assert probe.call("setting", "shoal.node_name") == ""
    assert probe.call("setting", "shoal.worker_entry") == "jobprobe:main"
    assert probe.call("setting", "shoal.cluster_secret") == ""
    assert probe.call("setting", "no_such.setting") is None
    assert probe.call("setting", "port") == str(probe_port(probe))


def probe_port(probe: Probe) -> int:
    tag, rows, chunks = probe.execute("SELECT current_setting('port')::int")
    return struct.unpack(">i", b"".join(chunks)[-4:])[0]


def test_the_gucs_are_defined(server: Server) -> None:
    rows = dict(server.rows("SELECT name, context FROM pg_settings WHERE name LIKE 'shoal.%'"))
    for name in ("shoal.node_name", "shoal.mux_port", "shoal.workers", "shoal.database",
                 "shoal.metrics_port", "shoal.mux_entry", "shoal.worker_entry"):
        assert rows[name] == "postmaster", name
    assert "shoal.cluster_secret" not in rows  # GUC_NO_SHOW_ALL
    assert server.rows("SHOW shoal.cluster_secret") == [("",)]
    server.rows("CREATE ROLE secret_peeker")
    with server.connect() as conn:
        conn.execute("SET ROLE secret_peeker")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SHOW shoal.cluster_secret")


def test_a_terminated_worker_is_replaced_quietly(server: Server, probe: Probe) -> None:
    old = worker_pid(server)
    server.rows("SELECT pg_terminate_backend(%s)", (old,))
    probe.close()
    deadline = time.monotonic() + 15
    while True:
        rows = server.rows("SELECT pid FROM pg_stat_activity WHERE backend_type = 'shoal worker'")
        if rows and rows[0][0] != old:
            break
        assert time.monotonic() < deadline, "the worker was not restarted"
        time.sleep(0.1)
    fresh = server.probe("0")
    try:
        assert fresh.execute("SELECT 1")[:2] == ("SELECT 1", 1)
    finally:
        fresh.close()


# -- results: binary COPY tuple data -----------------------------------------------------------------

TYPES_QUERY = """
SELECT i::int2 AS i2, i * 100000 AS i4, i::int8 * 10000000000 AS i8,
       i / 3.0::float4 AS f4, i / 7.0::float8 AS f8, i % 2 = 0 AS b,
       'tëxt ' || i AS t, ('vc' || i)::varchar(10) AS vc, ('c' || i)::char(5) AS bp,
       ('name' || i)::name AS nm, decode(md5(i::text), 'hex') AS by,
       md5(i::text)::uuid AS u, ('{"a": ' || i || '}')::json AS j, ('{"b": [' || i || ']}')::jsonb AS jb,
       i / 7.0 AS num, date '2024-01-01' + i AS d, timestamp '2024-01-01 10:00' + i * interval '1 hour' AS ts,
       timestamptz '2024-01-01 10:00+02' + i * interval '1 min' AS tstz,
       time '10:00' + i * interval '1 s' AS tm,
       i * interval '1 day 2 hours' AS iv, ARRAY[i, i + 1, NULL] AS ia, ARRAY['x' || i, NULL] AS ta,
       (i * 1000)::oid AS o, ('10.0.0.' || i)::inet AS ip, ROW(i, 'r' || i) AS rec
FROM generate_series(1, 40) AS i
"""


def nulls_query(query: str) -> str:
    """The same columns, all NULL on every other row."""
    return (f"SELECT q.* FROM generate_series(1, 40) AS k(n) "
            f"LEFT JOIN ({query}) AS q ON q.i2 = k.n AND k.n % 2 = 0")


@pytest.mark.parametrize("query", [
    TYPES_QUERY,
    nulls_query(TYPES_QUERY),
    "SELECT 'NaN'::float8, '-Infinity'::float8, '-0'::float8, 'Infinity'::float4, (-32768)::int2, "
    "(-2147483648)::int4, (-9223372036854775808)::int8, ''::text, NULL::text, ''::bytea",
    "SELECT 1 WHERE false",
    "SELECT",  # no columns at all
])
def test_tuples_are_those_of_binary_copy(server: Server, probe: Probe, query: str) -> None:
    expected = server.copy_tuples(query)
    tag, rows, chunks = probe.execute(query)
    count = server.rows(f"SELECT count(*) FROM ({query}) AS q")[0][0]
    assert (tag, rows) == (f"SELECT {count}", count)
    assert b"".join(chunks) == expected
    assert len(chunks) <= 1  # below chunk_bytes: one final chunk


def test_chunks_end_at_tuple_boundaries(server: Server, probe: Probe) -> None:
    query = "SELECT i, repeat('x', i % 50) FROM generate_series(1, 2000) AS i"
    expected = server.copy_tuples(query)
    tag, rows, chunks = probe.execute(query, chunk_bytes=1000)
    assert (tag, rows) == ("SELECT 2000", 2000)
    assert b"".join(chunks) == expected
    assert len(chunks) > 20
    for chunk in chunks[:-1]:
        assert 1000 <= len(chunk) < 1000 + 100
    # each chunk starts with a tuple: field count 2
    assert all(chunk[:2] == b"\x00\x02" for chunk in chunks)


def test_max_rows_and_a_discarding_sink(probe: Probe) -> None:
    tag, rows, chunks = probe.execute("SELECT i FROM generate_series(1, 100) AS i", max_rows=7)
    assert (tag, rows) == ("SELECT 7", 7)
    assert b"".join(chunks).count(b"\x00\x01\x00\x00\x00\x04") == 7
    assert probe.execute("SELECT i FROM generate_series(1, 5) AS i", sink_mode="none") == ("SELECT 5", 5, [])


# -- parameters ----------------------------------------------------------------------------------------


def first_value(chunks: list[bytes]) -> bytes | None:
    data = b"".join(chunks)
    assert data[:2] == b"\x00\x01"
    (length,) = struct.unpack(">i", data[2:6])
    return None if length < 0 else data[6:6 + length]


def test_text_and_binary_parameters(probe: Probe) -> None:
    int4, text, int8, float8, numeric, bytea, date = 23, 25, 20, 701, 1700, 17, 1082
    sql = "SELECT ($1 + 1)::text || '|' || $2 || '|' || $3 || '|' || $4 || '|' || $5 || '|' || " \
          "encode($6, 'hex') || '|' || $7"
    types = [int4, text, int8, float8, numeric, bytea, date]
    text_params = ["41", "hé", "-9000000000", "2.5", "3.14159", "\\x00ff", "2024-02-29"]
    binary_params = [struct.pack(">i", 41), "hé".encode(), struct.pack(">q", -9000000000),
                     struct.pack(">d", 2.5), None, b"\x00\xff", struct.pack(">i", 8825)]
    expected = "42|hé|-9000000000|2.5|3.14159|00ff|2024-02-29".encode()
    assert first_value(probe.execute(sql, types, text_params)[2]) == expected
    # mixed: binary where we have the encoding, text for numeric
    binary_params[4] = "3.14159"
    flags = [True, True, True, True, False, True, True]
    assert first_value(probe.execute(sql, types, binary_params, flags)[2]) == expected
    # all-binary flag, bytearray and memoryview accepted
    assert first_value(probe.execute("SELECT $1::int4 * 2", [int4], [bytearray(struct.pack(">i", 21))],
                                     True)[2]) == struct.pack(">i", 42)
    assert first_value(probe.execute("SELECT $1::int4 * 2", [int4], [struct.pack(">i", 4)], [True],
                                     wrap="memoryview")[2]) == struct.pack(">i", 8)


def test_null_parameters_and_inferred_types(probe: Probe) -> None:
    assert first_value(probe.execute("SELECT $1::int IS NULL", [23], [None])[2]) == b"\x01"
    # type 0: inferred from the context, as with the extended protocol
    chunks = probe.execute("SELECT $1 + 1, $2 || 'x'", [0, 0], ["41", "y"])[2]
    assert b"".join(chunks) == b"\x00\x02" + struct.pack(">i", 4) + struct.pack(">i", 42) + \
        struct.pack(">i", 2) + b"yx"
    err = probe.error("execute", "SELECT 1 WHERE $1 IS NULL", [0], [None], False, None)
    assert err.sqlstate == "42P18"


def test_bad_parameters(probe: Probe) -> None:
    err = probe.error("execute", "SELECT $1::int", [23], ["forty"], False, None)
    assert (err.type_name, err.sqlstate) == ("JobError", "22P02")
    err = probe.error("execute", "SELECT $1::int", [23], [b"\x00\x00\x00\x01\x02"], True, None)
    assert err.sqlstate == "22P03"
    assert probe.error("execute", "SELECT $1::int", [23, 23], ["1"], False, None).type_name == "ValueError"
    assert probe.error("execute", "SELECT $1::int", [23], [1], False, None).type_name == "TypeError"
    assert probe.error("execute", "SELECT $1::text", [25], ["a\0b"], False, None).type_name == "ValueError"


# -- statements, tags, errors --------------------------------------------------------------------------


def test_command_tags_and_returning(server: Server, probe: Probe) -> None:
    assert probe.execute("CREATE TABLE tags_t (id int PRIMARY KEY, v text)")[:2] == ("CREATE TABLE", 0)
    assert probe.execute("INSERT INTO tags_t SELECT i, 'v' || i FROM generate_series(1, 5) AS i")[:2] == \
        ("INSERT 0 5", 5)
    tag, rows, chunks = probe.execute("UPDATE tags_t SET v = v || '!' WHERE id <= $1 RETURNING id, v",
                                      [23], ["2"])
    assert (tag, rows) == ("UPDATE 2", 2)
    assert b"".join(chunks) == server.copy_tuples("SELECT id, v FROM tags_t WHERE id <= 2 ORDER BY id")
    assert probe.execute("DELETE FROM tags_t WHERE id = 5")[:2] == ("DELETE 1", 1)
    assert probe.execute("SET work_mem = '8MB'")[:2] == ("SET", 0)
    assert probe.execute("RESET work_mem")[:2] == ("RESET", 0)
    assert probe.execute("CREATE TABLE tags_c AS SELECT * FROM tags_t")[:2] == ("SELECT 4", 4)
    tag, rows, chunks = probe.execute("SHOW work_mem")
    assert tag == "SHOW" and first_value(chunks) == b"4MB"
    assert server.rows("SELECT count(*) FROM tags_t") == [(4,)]


def test_scripts_without_the_plan_cache(server: Server, probe: Probe) -> None:
    err = probe.error("execute", "CREATE TABLE script_t (a int); INSERT INTO script_t VALUES (1)",
                      [], [], False, None)
    assert err.sqlstate == "42P01"  # prepared whole: the INSERT is analysed before the table exists
    tag, rows, _ = probe.execute("CREATE TABLE script_t (a int); INSERT INTO script_t VALUES (1), (2)",
                                 cache=False)
    assert (tag, rows) == ("INSERT 0 2", 2)
    assert server.rows("SELECT count(*) FROM script_t") == [(2,)]


def test_errors_are_job_errors_and_the_worker_goes_on(probe: Probe) -> None:
    err = probe.error("execute", "SELECT * FROM no_such_table", [], [], False, None)
    assert (err.type_name, err.sqlstate) == ("JobError", "42P01")
    assert err.message == err.text == 'relation "no_such_table" does not exist'
    assert (err.context, err.position) == (None, 15)  # the statement is the job: no "SQL statement" line
    err = probe.error("execute", "SELECT 1 FRO t", [], [], False, None)
    assert (err.sqlstate, err.position) == ("42601", 14)  # at "t"
    err = probe.error("execute", "DO $$BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', "
                      "HINT = 'the hint', ERRCODE = 'P0001'; END$$", [], [], False, None)
    assert (err.sqlstate, err.message, err.detail, err.hint) == ("P0001", "boom", "the detail", "the hint")
    assert err.context == "PL/pgSQL function inline_code_block line 1 at RAISE"
    err = probe.error("execute", "SELECT 1 / (i - 3) FROM generate_series(1, 5) AS i", [], [], False, None)
    assert err.sqlstate == "22012"
    assert not probe.call("in_block")
    assert probe.execute("SELECT 1")[:2] == ("SELECT 1", 1)


def test_transaction_control_is_refused_in_execute(probe: Probe) -> None:
    for sql in ("BEGIN", "COMMIT", "SAVEPOINT s"):
        err = probe.error("execute", sql, [], [], False, None)
        assert err.sqlstate == "25000", sql
    err = probe.error("execute", "COPY (SELECT 1) TO STDOUT", [], [], False, None)
    assert err.sqlstate == "0A000"


def test_a_failed_statement_is_rolled_back(server: Server, probe: Probe) -> None:
    probe.execute("CREATE TABLE atomic_t (id int PRIMARY KEY)")
    err = probe.error("execute", "INSERT INTO atomic_t VALUES (1), (2), (1)", [], [], False, None)
    assert err.sqlstate == "23505"
    assert server.rows("SELECT count(*) FROM atomic_t") == [(0,)]


def test_plans_follow_the_catalog(server: Server, probe: Probe) -> None:
    probe.execute("CREATE TABLE replan_t (a int)")
    probe.execute("INSERT INTO replan_t VALUES (1)")
    assert probe.execute("SELECT * FROM replan_t")[2] == [server.copy_tuples("SELECT * FROM replan_t")]
    probe.execute("ALTER TABLE replan_t ADD COLUMN b text DEFAULT 'x'")
    assert probe.execute("SELECT * FROM replan_t")[2] == [server.copy_tuples("SELECT * FROM replan_t")]
    probe.execute("DROP TABLE replan_t")
    assert probe.error("execute", "SELECT * FROM replan_t", [], [], False, None).sqlstate == "42P01"


def test_the_plan_cache_evicts(probe: Probe) -> None:
    for i in range(600):
        assert probe.execute(f"SELECT {i} AS n", sink_mode="none")[:2] == ("SELECT 1", 1)
    assert first_value(probe.execute("SELECT $1::int", [23], ["5"])[2]) == struct.pack(">i", 5)
    assert first_value(probe.execute("SELECT 599 AS n")[2]) == struct.pack(">i", 599)


def test_activity_shows_the_job(server: Server, probe: Probe) -> None:
    probe.send("execute", "SELECT pg_sleep(0.5) /* activity probe */", [], [], False, None)
    deadline = time.monotonic() + 5
    seen = []
    while time.monotonic() < deadline and not seen:
        seen = server.rows("SELECT state, query FROM pg_stat_activity WHERE backend_type = 'shoal worker' "
                           "AND query LIKE '%activity probe%' AND state = 'active'")
    assert seen
    probe.receive()
    state = server.rows("SELECT state FROM pg_stat_activity WHERE backend_type = 'shoal worker'")
    assert state == [("idle",)]


# -- the sink ---------------------------------------------------------------------------------------


def test_a_failing_sink_aborts_the_statement(server: Server, probe: Probe) -> None:
    probe.execute("CREATE TABLE sink_t (id int)")
    err = probe.error("execute", "INSERT INTO sink_t SELECT generate_series(1, 3) RETURNING id",
                      [], [], False, None, sink_mode="raise")
    assert (err.type_name, err.text) == ("ValueError", "the sink refuses")  # the sink's own exception
    assert server.rows("SELECT count(*) FROM sink_t") == [(0,)]
    assert probe.execute("SELECT 1")[:2] == ("SELECT 1", 1)


def test_a_sink_cannot_start_another_job(probe: Probe) -> None:
    tag, rows, chunks = probe.execute("SELECT 1", sink_mode="nested")
    assert chunks[1][0] == "nested refused" and "cannot be called while a job runs" in chunks[1][1]


def test_a_cancel_in_the_sink_reads_as_a_cancel(probe: Probe) -> None:
    err = probe.error("execute", "SELECT i FROM generate_series(1, 10) AS i", [], [], False, None,
                      chunk_bytes=10, sink_mode="cancel")
    assert (err.type_name, err.sqlstate) == ("JobError", "57014")
    assert probe.execute("SELECT 1")[:2] == ("SELECT 1", 1)


# -- roles ----------------------------------------------------------------------------------------------


def test_jobs_run_as_the_given_role(server: Server, probe: Probe) -> None:
    server.rows("CREATE ROLE job_reader")
    server.rows("CREATE ROLE job_nobody")
    server.rows("CREATE TABLE secret_t (x int)")
    server.rows("INSERT INTO secret_t VALUES (7)")
    server.rows("GRANT SELECT ON secret_t TO job_reader")
    err = probe.error("execute", "SELECT * FROM secret_t", [], [], False, "job_nobody")
    assert (err.sqlstate, err.message) == ("42501", "permission denied for table secret_t")
    tag, rows, chunks = probe.execute("SELECT x, current_user::text FROM secret_t", role="job_reader")
    assert (tag, rows) == ("SELECT 1", 1)
    assert b"".join(chunks) == b"\x00\x02" + struct.pack(">ii", 4, 7) + struct.pack(">i", 10) + b"job_reader"
    # the role cannot escape, and the worker is itself again afterwards
    assert probe.error("execute", "SET ROLE postgres", [], [], False, "job_reader").sqlstate == "42501"
    me = first_value(probe.execute("SELECT current_user::text")[2])
    assert me == _superuser(server).encode()
    assert probe.error("execute", "SELECT 1", [], [], False, "no_such_role").sqlstate == "42704"


def _superuser(server: Server) -> str:
    return server.rows("SELECT rolname FROM pg_authid WHERE oid = 10")[0][0]


def test_a_role_applies_inside_a_block(server: Server, probe: Probe) -> None:
    server.rows("CREATE ROLE block_nobody")
    server.rows("CREATE TABLE block_secret (x int)")
    probe.call("begin")
    probe.execute("SELECT 1", role="block_nobody")
    err = probe.error("execute", "SELECT * FROM block_secret", [], [], False, "block_nobody")
    assert err.sqlstate == "42501"
    assert probe.call("block_failed")
    probe.call("rollback")


# -- cancel ---------------------------------------------------------------------------------------------


def test_cancel_a_running_job(server: Server, probe: Probe) -> None:
    pid = worker_pid(server)
    probe.send("execute", "SELECT pg_sleep(30)", [], [], False, None)
    time.sleep(0.3)
    started = time.monotonic()
    assert server.rows("SELECT pg_cancel_backend(%s)", (pid,)) == [(True,)]
    with pytest.raises(ProbeError) as info:
        probe.receive()
    assert info.value.sqlstate == "57014"
    assert time.monotonic() - started < 5
    assert probe.execute("SELECT 1")[:2] == ("SELECT 1", 1)


def test_a_stale_cancel_does_not_cancel_the_next_job(server: Server, probe: Probe) -> None:
    pid = worker_pid(server)
    assert probe.execute("SELECT 1")[:2] == ("SELECT 1", 1)
    server.rows("SELECT pg_cancel_backend(%s)", (pid,))
    time.sleep(0.2)
    assert probe.execute("SELECT pg_sleep(0.2)")[:2] == ("SELECT 1", 1)


# -- transaction blocks -------------------------------------------------------------------------------


def test_a_block_with_savepoints(server: Server, probe: Probe) -> None:
    probe.execute("CREATE TABLE block_t (id int PRIMARY KEY)")
    assert not probe.call("in_block")
    probe.call("begin")
    assert probe.call("in_block") and not probe.call("block_failed")
    probe.execute("INSERT INTO block_t VALUES (1)")
    assert server.rows("SELECT state FROM pg_stat_activity WHERE backend_type = 'shoal worker'") == \
        [("idle in transaction",)]
    probe.call("savepoint", "s1")
    probe.execute("INSERT INTO block_t VALUES (2)")
    err = probe.error("execute", "INSERT INTO block_t VALUES (1)", [], [], False, None)
    assert err.sqlstate == "23505"
    assert probe.call("block_failed")
    assert server.rows("SELECT state FROM pg_stat_activity WHERE backend_type = 'shoal worker'") == \
        [("idle in transaction (aborted)",)]
    err = probe.error("execute", "SELECT 1", [], [], False, None)
    assert err.sqlstate == "25P02"
    assert probe.error("savepoint", "s2").sqlstate == "25P02"
    probe.call("rollback_to", "s1")
    assert not probe.call("block_failed") and probe.call("in_block")
    probe.execute("INSERT INTO block_t VALUES (3)")
    probe.call("savepoint", "s2")
    probe.execute("INSERT INTO block_t VALUES (4)")
    probe.call("release", "s2")
    assert server.rows("SELECT count(*) FROM block_t") == [(0,)]  # not committed yet
    assert probe.call("commit") is True
    assert not probe.call("in_block")
    assert server.rows("SELECT id FROM block_t ORDER BY id") == [(1,), (3,), (4,)]


def test_commit_of_a_failed_block_rolls_back(server: Server, probe: Probe) -> None:
    probe.execute("CREATE TABLE failed_t (id int)")
    probe.call("begin")
    probe.execute("INSERT INTO failed_t VALUES (1)")
    probe.error("execute", "SELECT 1/0", [], [], False, None)
    assert probe.call("commit") is False
    assert not probe.call("in_block")
    assert server.rows("SELECT count(*) FROM failed_t") == [(0,)]
    # psql's rules: a missing savepoint aborts the block
    probe.call("begin")
    assert probe.error("rollback_to", "nope").sqlstate == "3B001"
    assert probe.call("block_failed")
    probe.call("rollback")
    assert not probe.call("in_block")


def test_block_misuse(probe: Probe) -> None:
    assert probe.error("commit").sqlstate == "25P01"
    assert probe.error("prepare", "g").sqlstate == "25P01"
    assert probe.error("savepoint", "s").sqlstate == "25P01"
    assert probe.call("rollback") is None  # nothing to do
    probe.call("begin")
    assert probe.error("begin").sqlstate == "25001"
    assert probe.error("commit_prepared", "g").sqlstate == "25001"
    assert not probe.call("block_failed")
    probe.call("rollback")
    assert probe.error("begin", "no such level").sqlstate == "22023"
    assert not probe.call("in_block")


def test_isolation_and_read_only(server: Server, probe: Probe) -> None:
    probe.execute("CREATE TABLE iso_t (id int)")
    probe.call("begin", "repeatable read")
    assert first_value(probe.execute("SHOW transaction_isolation")[2]) == b"repeatable read"
    assert probe.execute("SELECT count(*) FROM iso_t")[1] == 1
    server.rows("INSERT INTO iso_t VALUES (1)")
    # the snapshot of the block's first statement
    assert first_value(probe.execute("SELECT count(*)::int FROM iso_t")[2]) == struct.pack(">i", 0)
    probe.call("commit")
    probe.call("begin")  # read committed: each statement sees what committed before it
    assert first_value(probe.execute("SELECT count(*)::int FROM iso_t")[2]) == struct.pack(">i", 1)
    server.rows("INSERT INTO iso_t VALUES (2)")
    assert first_value(probe.execute("SELECT count(*)::int FROM iso_t")[2]) == struct.pack(">i", 2)
    probe.call("commit")
    probe.call("begin", "serializable", True)
    assert first_value(probe.execute("SHOW transaction_isolation")[2]) == b"serializable"
    assert probe.error("execute", "INSERT INTO iso_t VALUES (3)", [], [], False, None).sqlstate == "25006"
    probe.call("rollback")
    assert first_value(probe.execute("SHOW transaction_isolation")[2]) == b"read committed"


def test_two_phase_commit(server: Server, probe: Probe) -> None:
    probe.execute("CREATE TABLE twopc_t (id int)")
    probe.call("begin")
    probe.execute("INSERT INTO twopc_t VALUES (1)")
    assert probe.call("prepare", "jobs-gid-1") is True
    assert not probe.call("in_block")
    assert server.rows("SELECT gid FROM pg_prepared_xacts") == [("jobs-gid-1",)]
    assert server.rows("SELECT count(*) FROM twopc_t") == [(0,)]
    probe.call("commit_prepared", "jobs-gid-1")
    assert server.rows("SELECT count(*) FROM twopc_t") == [(1,)]

    probe.call("begin")
    probe.execute("INSERT INTO twopc_t VALUES (2)")
    assert probe.call("prepare", "jobs-gid-2") is True
    probe.call("rollback_prepared", "jobs-gid-2")
    assert server.rows("SELECT count(*) FROM twopc_t") == [(1,)]
    assert server.rows("SELECT count(*) FROM pg_prepared_xacts") == [(0,)]
    assert probe.error("commit_prepared", "jobs-gid-2").sqlstate == "42704"


def test_a_held_snapshot_serves_the_statements_that_ask_for_it(server: Server, probe: Probe) -> None:
    probe.execute("CREATE TABLE held_t (id int)")
    assert probe.error("hold_snapshot").sqlstate == "25000"  # only in a READ COMMITTED block
    probe.call("begin")
    probe.execute("INSERT INTO held_t VALUES (1)")
    probe.call("hold_snapshot")
    server.rows("INSERT INTO held_t VALUES (2)")

    def count(**kwargs: Any) -> bytes | None:
        return first_value(probe.execute("SELECT count(*)::int FROM held_t", **kwargs)[2])

    assert count(held_snapshot=True) == struct.pack(">i", 1)  # the block's own row, not the later one
    assert count() == struct.pack(">i", 2)  # the others take their own, as READ COMMITTED does
    assert count(held_snapshot=True) == struct.pack(">i", 1)
    assert probe.error("execute", "INSERT INTO held_t VALUES (3)", [], [], False, None,
                       held_snapshot=True).sqlstate == "0A000"  # read-only
    probe.call("rollback")
    probe.call("begin")
    probe.call("hold_snapshot")
    probe.call("drop_snapshot")
    assert probe.error("execute", "SELECT 1", [], [], False, None, held_snapshot=True).sqlstate == "XX000"
    probe.call("rollback")
    probe.call("begin")
    probe.call("hold_snapshot")
    assert probe.call("commit") is True  # a snapshot still held at commit is dropped, not leaked
    probe.call("begin", "repeatable read")
    assert probe.error("hold_snapshot").sqlstate == "25000"
    probe.call("rollback")


def test_the_server_log_is_clean(server: Server) -> None:
    log = (Path(server.node.logs_dir) / "postgresql.log").read_text(errors="replace")
    for bad in ("WARNING", "leaked", "TRAP", "terminated by signal", "PANIC"):
        assert bad not in log, bad


# -- the view over the multiplexer's statistics --------------------------------------------------------


def test_mux_stats_view_is_declared(server: Server) -> None:
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS shoal")
        cols = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'shoal.mux_stats'::regclass "
                            "AND attnum > 0 ORDER BY attnum").fetchall()
        assert [c[0] for c in cols][:3] == ["peer", "state", "msgs_in"] and len(cols) == 13
        assert conn.execute("SELECT has_table_privilege('public', 'shoal.mux_stats', 'SELECT')").fetchone() \
            == (True,)


# -- waiting for the database ----------------------------------------------------------------------------


def test_the_processes_wait_for_their_database(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = Path(tempfile.mkdtemp(prefix="shoal-jobs-db-"))
    sockets = str(base / "probe")
    node = start_node(base / "node", sockets, **{"shoal.database": "later_db"})
    try:
        srv = Server(node, sockets)
        time.sleep(2.5)  # long enough for a restart or two, were they failing every second
        srv.rows("CREATE DATABASE later_db")
        probe = srv.probe("0")
        try:
            assert probe.execute("SELECT current_database()::text")[2] == [
                b"\x00\x01" + struct.pack(">i", 8) + b"later_db"]
        finally:
            probe.close()
        node.stop()
        log = (Path(node.logs_dir) / "postgresql.log").read_text(errors="replace")
        assert log.count('FATAL:  database "later_db" does not exist') <= 2  # once per process, then quiet
        assert log.count("the multiplexer and its workers wait for it") == 1
        # a normal shutdown: no ERROR from the Python loops, which return on SIGTERM
        shutdown = log[log.index("received fast shutdown request"):]
        assert "ERROR" not in shutdown and "WARNING" not in shutdown
    finally:
        node.cleanup(release_resources=True)
        shutil.rmtree(base, ignore_errors=True)
