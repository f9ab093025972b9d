"""shoal.cluster and shoal.osuser against real PostgreSQL 15 servers: up, idempotence, down, status,
growing, destroy, and the failures a user can run into.

Under `make test` these run as the unprivileged user that runs the servers, so the "not root" code path
is the one exercised here (`make demo` exercises the root one). Ports 26200-26299 belong to this file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from shoal import osuser
from shoal.cluster import Cluster, Node, ResultTable, _partition_summary, port_in_use
from shoal.errors import ShoalError


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """A cluster directory that does not exist yet, with a short path (Unix socket paths are limited to
    107 bytes and pytest's tmp_path can be long). Whatever cluster is in it is destroyed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="shoal-t-"))
    directory = parent / "c"
    try:
        yield directory
    finally:
        try:
            with contextlib.suppress(ShoalError):  # e.g. a test left foreign files, not a cluster
                Cluster(directory).destroy()
        finally:
            shutil.rmtree(parent, ignore_errors=True)


def _sql(node: Node, query: str) -> list[tuple]:
    with psycopg.connect(node.conninfo, autocommit=True) as conn:
        cur = conn.execute(query)
        return list(cur.fetchall()) if cur.description else []


def _listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_up_starts_nodes_with_the_extension(cluster_dir: Path) -> None:
    steps: list[str] = []
    nodes = Cluster(cluster_dir).up(nodes=2, port=26201, progress=steps.append)

    assert [(n.name, n.port) for n in nodes] == [("n1", 26201), ("n2", 26202)]
    assert any("initdb n1" in s for s in steps) and any("starting n2" in s for s in steps)
    for node in nodes:
        assert node.conninfo == f"host=127.0.0.1 port={node.port} dbname=postgres user=postgres"
        settings = dict(_sql(node, "SELECT name, setting FROM pg_settings WHERE name IN "
                                   "('shared_preload_libraries', 'port', 'listen_addresses', "
                                   "'max_prepared_transactions', 'unix_socket_directories')"))
        assert settings == {
            "shared_preload_libraries": "shoal",
            "port": str(node.port),
            "listen_addresses": "127.0.0.1",
            "max_prepared_transactions": "64",
            "unix_socket_directories": str(cluster_dir / node.name),
        }
        assert _sql(node, "SELECT extname FROM pg_extension WHERE extname = 'shoal'") == [("shoal",)]
        assert _sql(node, "SELECT current_user") == [("postgres",)]
        # every node knows every node
        assert {r[0] for r in _sql(node, "SELECT name FROM shoal.nodes")} == {"n1", "n2"}
        assert (cluster_dir / node.name / f".s.PGSQL.{node.port}").is_socket()
        assert (cluster_dir / node.name / "server.log").is_file()


def test_up_twice_is_idempotent(cluster_dir: Path) -> None:
    cluster = Cluster(cluster_dir)
    first = cluster.up(nodes=2, port=26211)
    pids = [cluster.pid(n) for n in first]

    steps: list[str] = []
    again = Cluster(cluster_dir).up(progress=steps.append)  # no options: the recorded cluster

    assert again == first
    assert [cluster.pid(n) for n in again] == pids
    assert steps == []  # nothing to create, start or register
    assert Cluster(cluster_dir).up(nodes=2, port=26211) == first  # same options are fine too
    for node in first:
        assert len(_sql(node, "SELECT name FROM shoal.nodes")) == 2  # nobody registered twice


def test_up_refuses_to_change_ports_or_shrink(cluster_dir: Path) -> None:
    Cluster(cluster_dir).up(nodes=2, port=26221)
    with pytest.raises(ShoalError, match="already uses ports from 26221"):
        Cluster(cluster_dir).up(port=26225)
    with pytest.raises(ShoalError, match="does not remove nodes"):
        Cluster(cluster_dir).up(nodes=1)


def test_up_grows_the_cluster(cluster_dir: Path) -> None:
    Cluster(cluster_dir).up(nodes=1, port=26231)
    nodes = Cluster(cluster_dir).up(nodes=2)
    assert [n.port for n in nodes] == [26231, 26232]
    for node in nodes:
        assert {r[0] for r in _sql(node, "SELECT name FROM shoal.nodes")} == {"n1", "n2"}


def test_down_then_up_keeps_data(cluster_dir: Path) -> None:
    cluster = Cluster(cluster_dir)
    nodes = cluster.up(nodes=2, port=26241)
    _sql(nodes[0], "CREATE TABLE kept AS SELECT 42 AS answer")

    steps: list[str] = []
    cluster.down(progress=steps.append)
    assert steps == ["stopping n1", "stopping n2"]
    assert all(cluster.pid(n) is None for n in nodes)
    assert not any(port_in_use(n.port) for n in nodes)

    cluster.down(progress=steps.append)  # stopping a stopped cluster is harmless
    assert steps[-2:] == ["n1 is not running", "n2 is not running"]

    Cluster(cluster_dir).up()
    assert _sql(nodes[0], "SELECT answer FROM kept") == [(42,)]
    assert all(cluster.pid(n) is not None for n in nodes)


def test_status(cluster_dir: Path) -> None:
    cluster = Cluster(cluster_dir)
    nodes = cluster.up(nodes=2, port=26251)

    status = cluster.status()
    assert status.directory == cluster_dir
    assert status.service_user == osuser.current_user()
    assert [(s.node, s.accepting, s.members) for s in status.nodes] == [(n, True, 2) for n in nodes]
    assert all(s.pid == cluster.pid(s.node) and s.pid for s in status.nodes)
    # partitions and multiplexers: shown when the extension has the views, otherwise a note says so
    assert (status.partitions is not None) or any("shoal.partitions" in n for n in status.notes)
    assert (status.multiplexers is not None) or any("shoal.mux_stats" in n for n in status.notes)

    cluster.down()
    status = cluster.status()
    assert [(s.accepting, s.pid) for s in status.nodes] == [(False, None), (False, None)]
    assert status.partitions is None and status.multiplexers is None
    assert any("no node is running" in n for n in status.notes)


def test_destroy_removes_the_directory(cluster_dir: Path) -> None:
    cluster = Cluster(cluster_dir)
    nodes = cluster.up(nodes=2, port=26261)
    assert cluster.destroy() is True
    assert not cluster_dir.exists()
    assert not any(port_in_use(n.port) for n in nodes)
    assert Cluster(cluster_dir).destroy() is False  # nothing left: harmless


def test_destroy_keeps_what_shoal_did_not_create(cluster_dir: Path) -> None:
    cluster = Cluster(cluster_dir)
    cluster.up(nodes=1, port=26265)
    (cluster_dir / "notes.txt").write_text("mine")
    cluster.destroy()
    assert [p.name for p in cluster_dir.iterdir()] == ["notes.txt"]


def test_port_in_use_fails_before_creating_anything(cluster_dir: Path) -> None:
    with _listener(26272):
        with pytest.raises(ShoalError, match=r"port 26272 on 127\.0\.0\.1 \(node n2\) is already in use"):
            Cluster(cluster_dir).up(nodes=2, port=26271)
    assert not cluster_dir.exists()


def test_refuses_a_directory_holding_something_else(cluster_dir: Path) -> None:
    cluster_dir.mkdir()
    (cluster_dir / "precious").write_text("do not touch")
    with pytest.raises(ShoalError, match="not empty and holds no shoal cluster"):
        Cluster(cluster_dir).up(nodes=1, port=26275)
    with pytest.raises(ShoalError, match="no shoal cluster"):
        Cluster(cluster_dir).destroy()
    assert (cluster_dir / "precious").read_text() == "do not touch"


def test_a_node_that_cannot_start_reports_the_server_reason(cluster_dir: Path) -> None:
    cluster = Cluster(cluster_dir)
    nodes = cluster.up(nodes=1, port=26281)
    cluster.down()
    with (cluster.data_dir(nodes[0]) / "postgresql.auto.conf").open("a") as f:
        f.write("max_connections = 'many'\n")
    with pytest.raises(ShoalError) as failure:
        cluster.up()
    assert failure.value.message.startswith("node n1 did not start: ")
    assert 'invalid value for parameter "max_connections": "many"' in failure.value.message
    assert failure.value.hint == f"see {cluster.log_file(nodes[0])}"


def test_service_user_is_the_invoking_user_unless_root() -> None:
    if osuser.is_root():
        assert osuser.service_user(create=False) in (osuser.PREFERRED_USER, osuser.FALLBACK_USER)
    else:
        me = osuser.current_user()
        assert osuser.service_user() == me
        assert osuser.as_user_argv(me, ["true"]) == ["true"]
        assert osuser.run_as(me, ["id", "-un"]).stdout.strip() == me
        with pytest.raises(ShoalError, match="run as OS user 'someone-else'") as failure:
            osuser.as_user_argv("someone-else", ["true"])
        assert failure.value.hint == "run shoal as 'someone-else' or as root"


def test_partition_summary_counts_partitions_and_tables_per_node() -> None:
    view = ResultTable(["relation", "partition", "node", "local"],
                       [("t", "t_p0", "n1", True), ("t", "t_p1", "n2", False),
                        ("u", "u_p0", "n1", True), ("t", "t_p2", "n1", True)])
    assert _partition_summary(view) == ResultTable(["node", "partitions", "tables"],
                                                   [("n1", 3, 2), ("n2", 1, 1)])
    assert _partition_summary(ResultTable(["x"], [(1,), (2,)])) == ResultTable(["partitions"], [(2,)])


def test_a_node_that_joins_later_receives_every_shoal_table(cluster_dir: Path) -> None:
    n1, n2 = Cluster(cluster_dir).up(nodes=2, port=26261)
    for node in (n1, n2):
        _sql(node, "CREATE SCHEMA app")  # schemas are the DBA's business on the nodes there were
    _sql(n1, "CREATE TABLE acc (id serial PRIMARY KEY, v int) WITH (distributed_by = 'id', num_parts = 4)")
    _sql(n1, "INSERT INTO acc (v) SELECT g FROM generate_series(1, 100) g")
    _sql(n1, "CREATE TABLE app.prod (code text PRIMARY KEY, price numeric) WITH (global)")
    _sql(n1, "INSERT INTO app.prod VALUES ('a', 1.5), ('b', 2.25)")
    _sql(n1, "GRANT SELECT ON app.prod TO PUBLIC")
    _sql(n1, "CREATE TABLE app.prod_notes (code text REFERENCES app.prod, note text) WITH (global)")
    _sql(n1, "CREATE ROLE auditor")  # n2 has it too (role DDL is shared); n3 will receive it
    _sql(n1, "GRANT SELECT ON acc TO auditor")
    # made where role DDL is not shared (a database without shoal): n1 alone has it
    with psycopg.connect(n1.conninfo, dbname="template1", autocommit=True) as conn:
        conn.execute("CREATE ROLE veteran LOGIN PASSWORD 'pw' CONNECTION LIMIT 3 "
                     "VALID UNTIL '2031-01-02 03:04:05+00'; GRANT auditor TO veteran WITH ADMIN OPTION; "
                     "ALTER ROLE veteran SET search_path = app, \"Odd, \"\"Name\"\"\", \"$user\"; "
                     "ALTER ROLE veteran IN DATABASE postgres SET work_mem = '5MB'")
    settings = ("SELECT d.datname, s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_database d "
                "ON d.oid = s.setdatabase WHERE s.setrole = 'veteran'::regrole ORDER BY 1 NULLS FIRST")
    veteran = ("SELECT rolcanlogin, rolconnlimit, rolvaliduntil, rolpassword, "
               "pg_has_role('veteran', 'auditor', 'USAGE WITH ADMIN OPTION') FROM pg_authid "
               "WHERE rolname = 'veteran'")

    steps: list[str] = []
    n3 = Cluster(cluster_dir).up(nodes=3, progress=steps.append)[2]
    assert "created 3 shoal table(s) on n3" in steps, "; ".join(steps)

    assert _sql(n3, "SELECT count(*), sum(v) FROM acc") == [(100, 5050)]
    assert _sql(n3, "SELECT node, is_local FROM shoal.partitions ORDER BY part") == [
        ("n1", False), ("n2", False), ("n1", False), ("n2", False)]
    prod = "SELECT * FROM app.prod ORDER BY code"
    assert _sql(n3, prod) == _sql(n1, prod)
    assert _sql(n3, "SELECT has_table_privilege('public', 'app.prod', 'SELECT')") == [(True,)]
    # a global copy's foreign key holds there too
    assert _sql(n3, "SELECT constraint_name FROM shoal.foreign_keys") == [("prod_notes_code_fkey",)]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        _sql(n3, "INSERT INTO app.prod_notes VALUES ('nope', 'x')")
    # the roles too, with their password (the same verifier), memberships and privileges
    assert _sql(n3, veteran) == _sql(n1, veteran) != []
    assert _sql(n3, settings) == _sql(n1, settings) == [
        (None, ['search_path=app, "Odd, ""Name""", "$user"']), ("postgres", ["work_mem=5MB"])]
    assert _sql(n3, "SELECT has_table_privilege('auditor', 'acc', 'SELECT')") == [(True,)]
    assert _sql(n3, "SELECT has_table_privilege('veteran', 'acc', 'SELECT')") == [(True,)]

    # the new node writes as every node does: its own sequence values, every copy of a global table
    new_id = _sql(n3, "INSERT INTO acc (v) VALUES (7) RETURNING id")[0][0]
    assert new_id % 1024 == 3 and _sql(n1, f"SELECT v FROM acc WHERE id = {new_id}") == [(7,)]
    _sql(n3, "INSERT INTO app.prod VALUES ('c', 3)")
    _sql(n1, "UPDATE app.prod SET price = 9 WHERE code = 'a'")
    for node in (n1, n2, n3):
        assert _sql(node, "SELECT code, price FROM app.prod ORDER BY code") == [
            ("a", 9), ("b", Decimal("2.25")), ("c", 3)]
    _sql(n1, "ALTER TABLE acc ADD COLUMN w int DEFAULT 1")
    assert _sql(n3, "SELECT sum(w) FROM acc") == [(101,)]
    # and it takes partitions moved to it (the other nodes had no foreign server for it)
    assert _sql(n2, "SELECT shoal.move_partition('acc_3', 'n3')")[0][0] > 0
    for node in (n1, n2, n3):
        assert _sql(node, "SELECT count(*), sum(v) FROM acc") == [(101, 5057)]
        assert _sql(node, "SELECT node FROM shoal.partitions WHERE part = 3") == [("n3",)]
    assert _sql(n3, "SELECT relkind::text FROM pg_class WHERE relname = 'acc_3'") == [("r",)]

    steps.clear()
    Cluster(cluster_dir).up(progress=steps.append)  # again: no table is missing; n2 gets veteran
    assert not any("created" in s for s in steps)
    assert _sql(n2, veteran) == _sql(n1, veteran)
    with pytest.raises(psycopg.errors.UndefinedObject, match='node "nope" does not exist'):
        _sql(n1, "SELECT shoal.sync_node('nope')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is this node"):
        _sql(n1, "SELECT shoal.sync_node('n1')")


def test_shoal_processes_leave_with_a_killed_postmaster(cluster_dir: Path) -> None:
    """The multiplexer and workers must not outlive their postmaster (say, killed by the OOM killer):
    they would hold the multiplexer's ports against the next one."""
    cluster = Cluster(cluster_dir)
    node = cluster.up(nodes=1, port=26271)[0]
    postmaster = cluster.pid(node)
    assert postmaster is not None

    def shoal_children() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster and b"shoal" in command:
                found.append(int(entry.name))
        return found

    children = shoal_children()
    assert len(children) >= 2  # the multiplexer and its workers
    os.kill(postmaster, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
        time.sleep(0.1)
    left = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "shoal processes outlived their postmaster"
    with contextlib.suppress(FileNotFoundError):
        (cluster.data_dir(node) / "postmaster.pid").unlink()
