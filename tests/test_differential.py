"""The differential suite of distributed and global tables: plain PostgreSQL is the oracle.

The same schema (tests/differential/schema.sql) and the same rows (tests/differential/data.py) go into
one plain PostgreSQL 15 node and into a 3-node shoal cluster, where the tables are distributed (hash, by
their key, co-located where it matters) or global. Then every query of tests/differential/queries.sql
runs on plain PostgreSQL and on EVERY node of the cluster, and the answers must be identical: the same
columns and rows (compared as text, PostgreSQL's own output; as sorted multisets unless the query's ORDER BY
makes the order total), or the same SQLSTATE when plain PostgreSQL fails too. Prepared statements run
often enough that the generic plan (runtime partition pruning) is used.

Writes (tests/differential/dml.sql, COPY FROM, prepared DML, DDL) run on plain PostgreSQL and on one node
of the cluster, a different one from case to case; the statements' results must match, and afterwards
the tables must hold the same rows seen from every node. Last come the bad inputs of the issue: each must
be a clear error that leaves every node's catalog and tables as they were.

Set SHOAL_DIFF_AGAINST=plain to run the same harness against a second plain PostgreSQL node instead of
the cluster (a check of the harness itself). Ports 26500-26599 belong to this file.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg.types.numeric import Int8

HERE = Path(__file__).resolve().parent
FILES = HERE / "differential"
PLAIN_PORT = 26500
CLUSTER_PORT = 26501  # n1..n3 on 26501-26503, multiplexers at +1000, metrics at +2000
SELFCHECK_PORT = 26510
NODES = 3
FORMATS = ["text", "csv", "binary"]
AGAINST_PLAIN = os.environ.get("SHOAL_DIFF_AGAINST") == "plain"
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres -c extra_float_digits=1 "
                   "-c lc_messages=C -c statement_timeout=60s")
MARKER = re.compile(r"/\*SHOAL (.*?) SHOAL\*/", re.DOTALL)
HEADER = re.compile(r"^-- name: (.+)$", re.MULTILINE)

needs_shoal = pytest.mark.skipif(AGAINST_PLAIN, reason="checks shoal itself, not a plain node")


def _load_data_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("differential_data", FILES / "data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


data = _load_data_module()


# -- reading the SQL files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One entry of queries.sql or dml.sql."""

    name: str
    statements: tuple[str, ...]
    ordered: bool = False
    tables: tuple[str, ...] = ()


def split_statements(text: str) -> list[str]:
    """Statements end with ';' at the end of a line; parts holding nothing but comments are dropped."""
    parts = re.split(r";[ \t]*$", text, flags=re.MULTILINE)
    out = []
    for part in parts:
        code = re.sub(r"/\*.*?\*/", "", part, flags=re.DOTALL)
        code = re.sub(r"^\s*--.*$", "", code, flags=re.MULTILINE)
        if code.strip():
            out.append(part.strip())
    return out


def read_cases(name: str) -> list[Case]:
    text = (FILES / name).read_text()
    heads = list(HEADER.finditer(text))
    cases = []
    for i, head in enumerate(heads):
        body = text[head.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        title, _, options = head.group(1).partition(";")
        ordered = title.strip().endswith("[ordered]")
        title = title.replace("[ordered]", "").strip()
        tables: tuple[str, ...] = ()
        if options.strip().startswith("tables:"):
            tables = tuple(options.strip()[len("tables:"):].split())
        cases.append(Case(title, tuple(split_statements(body)), ordered, tables))
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), f"duplicate case names in {name}"
    return cases


def schema_phases(shoal: bool) -> tuple[list[str], list[str]]:
    """schema.sql's statements before and after the data is loaded, with the shoal markers live (for the
    cluster) or left as comments (for plain PostgreSQL)."""
    text = (FILES / "schema.sql").read_text()
    if shoal:
        text = MARKER.sub(lambda m: m.group(1), text)
    before, _, after = text.partition("\n-- phase: after-load\n")
    return split_statements(before), split_statements(after)


QUERIES = read_cases("queries.sql")
DML = read_cases("dml.sql")


# -- results ----------------------------------------------------------------------------------------------


Row = tuple[str | None, ...]


@dataclass(frozen=True)
class Outcome:
    """What a statement did: its command tag, columns and rows as PostgreSQL's text output, or the
    SQLSTATE it failed with (the message is shown, not compared)."""

    status: str = ""
    columns: tuple[str, ...] = ()
    rows: tuple[Row, ...] = ()
    sqlstate: str | None = None
    message: str = field(default="", compare=False)

    def short(self) -> str:
        if self.sqlstate:
            return f"ERROR {self.sqlstate}: {self.message}"
        return f"{self.status} ({len(self.rows)} rows)"


def _sort_key(row: Row) -> tuple[tuple[bool, str], ...]:
    return tuple((v is None, v or "") for v in row)


def text_rows(cur: psycopg.Cursor[Any]) -> list[Row]:
    """The current result's rows exactly as the server sent them (text format)."""
    res = cur.pgresult
    if res is None or res.status != pq.ExecStatus.TUPLES_OK:
        return []
    out = []
    for r in range(res.ntuples):
        row = []
        for c in range(res.nfields):
            value = res.get_value(r, c)
            row.append(None if value is None else bytes(value).decode())
        out.append(tuple(row))
    return out


def run(conn: psycopg.Connection[Any], query: str, params: Sequence[Any] | None = None, *,
        prepare: bool | None = None, ordered: bool = False) -> Outcome:
    """Run one statement; never raises for an SQL error."""
    try:
        with conn.cursor() as cur:
            cur.execute(query, params, prepare=prepare)
            rows = text_rows(cur)
            columns = tuple(d.name for d in cur.description or ())
            status = cur.statusmessage or ""
    except psycopg.Error as exc:
        return Outcome(sqlstate=exc.sqlstate or "?????", message=str(exc).strip().splitlines()[0])
    if not ordered:
        rows.sort(key=_sort_key)
    return Outcome(status, columns, tuple(rows))


def describe(name: str, expected: Outcome, got: Outcome) -> str:
    if expected.sqlstate or got.sqlstate:
        return f"  {name}: {got.short()}\n    plain: {expected.short()}"
    lines = [f"  {name}: {got.short()}, plain: {expected.short()}"]
    if got.columns != expected.columns:
        lines.append(f"    columns {got.columns} != plain {expected.columns}")
    if got.status != expected.status:
        lines.append(f"    command tag {got.status!r} != plain {expected.status!r}")
    mine, theirs = Counter(got.rows), Counter(expected.rows)
    extra_by_key = {r[0]: r for r in (mine - theirs) if r}
    for row in sorted((theirs - mine).elements(), key=_sort_key):
        other = extra_by_key.get(row[0]) if row else None
        if other is not None and len(other) == len(row) and len(lines) < 8:
            diffs = [f"{got.columns[i] if i < len(got.columns) else i}: here {a!r}, plain {b!r}"
                     for i, (a, b) in enumerate(zip(other, row, strict=True)) if a != b]
            lines.append(f"    row {row[0]!r}: " + "; ".join(diffs)[:400])
    if mine == theirs and got.rows != expected.rows:
        first = next(i for i, (a, b) in enumerate(zip(got.rows, expected.rows, strict=True)) if a != b)
        lines.append(f"    same rows, another order: from row {first}: {got.rows[first]} "
                     f"vs {expected.rows[first]}")
    else:
        extra, missing = list((mine - theirs).elements()), list((theirs - mine).elements())
        if extra:
            lines.append(f"    {len(extra)} rows only here, e.g. {sorted(extra, key=_sort_key)[:4]}")
        if missing:
            lines.append(f"    {len(missing)} rows only on plain, e.g. {sorted(missing, key=_sort_key)[:4]}")
    return "\n".join(lines)


def assert_same(what: str, expected: Outcome, got: dict[str, Outcome]) -> None:
    """Every node's outcome equals plain PostgreSQL's."""
    problems = [describe(name, expected, out) for name, out in got.items() if out != expected]
    if problems:
        pytest.fail(f"{what} differs from plain PostgreSQL:\n" + "\n".join(problems), pytrace=False)


# -- the two sides ------------------------------------------------------------------------------------


@dataclass
class Env:
    """Plain PostgreSQL and the cluster's nodes: a long-lived autocommit connection to each."""

    plain_conninfo: str
    conninfos: list[str]  # one per node
    names: list[str]
    shoal: bool  # False: the 'cluster' is a second plain node (SHOAL_DIFF_AGAINST=plain)
    plain: psycopg.Connection[Any] = field(init=False)
    nodes: list[psycopg.Connection[Any]] = field(init=False)
    load_errors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.plain = connect(self.plain_conninfo)
        self.nodes = [connect(c) for c in self.conninfos]

    def close(self) -> None:
        for conn in [self.plain, *self.nodes]:
            conn.close()

    def node(self, index: int) -> tuple[str, psycopg.Connection[Any]]:
        index %= len(self.nodes)
        return self.names[index], self.nodes[index]

    def everywhere(self, query: str, params: Sequence[Any] | None = None, *,
                   ordered: bool = False) -> tuple[Outcome, dict[str, Outcome]]:
        """Run on plain and on every node."""
        expected = run(self.plain, query, params, ordered=ordered)
        got = {name: run(conn, query, params, ordered=ordered) for name, conn in zip(self.names, self.nodes,
                                                                                        strict=True)}
        return expected, got

    def assert_everywhere(self, query: str, params: Sequence[Any] | None = None, *, ordered: bool = False,
                          what: str | None = None) -> Outcome:
        expected, got = self.everywhere(query, params, ordered=ordered)
        assert_same(what or query, expected, got)
        return expected

    def assert_tables(self, tables: Sequence[str]) -> None:
        """The tables hold the same rows (and columns) on plain PostgreSQL and, seen from every node."""
        for table in tables:
            expected = self.assert_everywhere(f"SELECT * FROM {table}", what=f"contents of {table}")
            assert expected.sqlstate is None, expected.message

    def resync(self, tables: Sequence[str]) -> None:
        """If an earlier failure left a table different on the cluster, put plain's rows there (behind
        shoal's back, see load_local), so that one bug does not fail every later test."""
        for table in tables:
            expected, got = self.everywhere(f"SELECT * FROM {table}")
            if all(out == expected for out in got.values()) or expected.sqlstate:
                continue
            load_local(self, table, expected.rows)

    def resync_case(self, statements: Sequence[str], tables: Sequence[str]) -> None:
        """resync the tables a case changes and the writable tables its statements read."""
        text = " ".join(statements)
        self.resync(sorted(set(tables) | {t for t in WRITABLE if re.search(rf"\b{t}\b", text)}))


WRITABLE = ["d_users", "d_orders", "d_products", "d_types", "g_types", "edge", "g_edge", "g_log"]
PARTITION_KEY = """
SELECT (SELECT count(*) FROM pg_attribute b
        WHERE b.attrelid = p.partrelid AND b.attnum > 0 AND NOT b.attisdropped AND b.attnum < a.attnum),
       format_type(a.atttypid, a.atttypmod)
FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
WHERE p.partrelid = %s::regclass
"""
LOCAL_PARTITIONS = """
SELECT c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::regclass AND c.relkind = 'r'
"""


def load_local(env: Env, table: str, rows: Sequence[Row]) -> None:
    """Replace a table's rows on the cluster without going through shoal: each node's local partitions of a
    distributed table get the rows PostgreSQL's hash routes to them, each copy of a global table gets
    them all (session_replication_role = replica: the triggers that ship changes stay quiet). For when
    shoal's own write path is the thing that failed."""
    for conn in env.nodes if env.shoal else env.nodes[:1]:
        key = conn.execute(PARTITION_KEY, (table,)).fetchone()
        targets: list[tuple[str, list[Row]]] = []
        if key is None:
            targets.append((table, list(rows)))
        else:
            index, keytype = key
            values = [row[index] for row in rows]
            for partition, bound in conn.execute(LOCAL_PARTITIONS, (table,)).fetchall():
                found = re.search(r"modulus (\d+), remainder (\d+)", bound)
                assert found, bound
                picked = conn.execute(
                    "SELECT i FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i) "
                    f"WHERE satisfies_hash_partition(%s::regclass, %s, %s, v::{keytype})",
                    (values, table, int(found[1]), int(found[2]))).fetchall()
                targets.append((partition, [rows[i - 1] for (i,) in picked]))
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            for target, subset in targets:
                conn.execute(f"DELETE FROM ONLY {target}")
                load(conn, target, subset)


def connect(conninfo: str) -> psycopg.Connection[Any]:
    """Autocommit; statements are prepared only when a test says so (prepare=True), never behind its back."""
    conn = psycopg.connect(conninfo, autocommit=True, options=SESSION_OPTIONS, connect_timeout=20)
    conn.prepare_threshold = 10**9  # None would refuse prepare=True too
    return conn


def copy_out(conn: psycopg.Connection[Any], statement: str) -> bytes:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        return b"".join(bytes(chunk) for chunk in copy)


def copy_in(conn: psycopg.Connection[Any], statement: str, payload: bytes) -> Outcome:
    try:
        with conn.cursor() as cur:
            with cur.copy(statement) as copy:
                copy.write(payload)
            return Outcome(cur.statusmessage or "")
    except psycopg.Error as exc:
        return Outcome(sqlstate=exc.sqlstate or "?????", message=str(exc).strip().splitlines()[0])


def copy_out_outcome(conn: psycopg.Connection[Any], statement: str) -> tuple[bytes | None, Outcome]:
    try:
        return copy_out(conn, statement), Outcome("COPY")
    except psycopg.Error as exc:
        return None, Outcome(sqlstate=exc.sqlstate or "?????", message=str(exc).strip().splitlines()[0])


def load(conn: psycopg.Connection[Any], table: str, rows: Sequence[Row]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def build(conn: psycopg.Connection[Any], statements: Sequence[str]) -> None:
    for statement in statements:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            raise AssertionError(f"schema statement failed: {statement}\n  {exc}") from exc


def set_up(env: Env) -> None:
    """Schema and rows on both sides. On the cluster all DDL runs on n1 and each table is loaded through
    another node; orders gets its rows before it is distributed. A table the cluster fails to load is
    noted in env.load_errors (test_every_table_loaded reports it) and left empty there."""
    tables = data.all_tables()
    for side, conn, shoal in ((None, env.plain, False), (0, env.nodes[0], env.shoal)):
        before, after = schema_phases(shoal)
        build(conn, before)
        for i, (table, rows) in enumerate(tables.items()):
            target = conn if side is None or table == "orders" else env.nodes[i % len(env.nodes)]
            if side is None:
                load(target, table, rows)
                continue
            try:
                load(target, table, rows)
            except psycopg.Error as exc:
                env.load_errors[table] = f"COPY {table} on {env.names[i % len(env.nodes)]}: {exc}"
                load_local(env, table, rows)
        build(conn, after)


def plain_node(base: Path, port: int) -> Any:
    from testgres import get_new_node

    node = get_new_node(base_dir=str(base), port=port)
    node.init(initdb_params=["--encoding=UTF8", "--locale=C.UTF-8"], log_statement="none")
    node.append_conf(fsync="off", synchronous_commit="off", full_page_writes="off",
                     unix_socket_directories=str(base), listen_addresses="127.0.0.1", max_connections=30,
                     lc_messages="C", timezone="UTC")
    node.start()
    return node


def node_conninfo(port: int) -> str:
    return f"host=127.0.0.1 port={port} dbname=postgres user={getpass.getuser()}"


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    os.environ.setdefault("PG_BIN", "/usr/lib/postgresql/15/bin")
    parent = Path(tempfile.mkdtemp(prefix="shoal-d-"))
    parent.chmod(0o755)
    cleanups: list[Any] = []
    try:
        plain = plain_node(parent / "plain", PLAIN_PORT)
        cleanups.append(lambda: plain.cleanup(release_resources=True))
        if AGAINST_PLAIN:
            other = plain_node(parent / "other", SELFCHECK_PORT)
            cleanups.append(lambda: other.cleanup(release_resources=True))
            conninfos = [node_conninfo(SELFCHECK_PORT)] * NODES
            names = [f"other#{i + 1}" for i in range(NODES)]
        else:
            from shoal.cluster import Cluster

            cluster = Cluster(parent / "c")
            cleanups.append(cluster.destroy)
            nodes = cluster.up(nodes=NODES, port=CLUSTER_PORT)
            conninfos, names = [n.conninfo for n in nodes], [n.name for n in nodes]
            with psycopg.connect(conninfos[0], autocommit=True) as conn:
                has = conn.execute("SELECT to_regprocedure("
                                   "'shoal.create_distributed_table(regclass,name,integer,regclass)')"
                                   " IS NOT NULL").fetchone()
            assert has and has[0], "the installed shoal extension has no shoal.create_distributed_table"
        environment = Env(node_conninfo(PLAIN_PORT), conninfos, names, shoal=not AGAINST_PLAIN)
        cleanups.append(environment.close)
        set_up(environment)
        yield environment
    finally:
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        shutil.rmtree(parent, ignore_errors=True)


# -- where shoal still differs from plain PostgreSQL: documented limitations ------------------------------
# Each test below fails on shoal today (strict: one that starts passing must lose its entry).

NO_TABLE_KEY = ("a distributed table's primary key exists only on its local partitions, not on the table "
                "(README: PostgreSQL allows no unique index with foreign partitions)")

KNOWN_BUGS: dict[str, str] = {
    **{f"test_keys_and_indexes_as_on_plain[{t}]": NO_TABLE_KEY for t in ("users", "orders", "d_users",
                                                                          "tags")},
}


@pytest.fixture(autouse=True)
def _known_bug(request: pytest.FixtureRequest) -> None:
    reason = KNOWN_BUGS.get(request.node.name)
    if reason and not AGAINST_PLAIN:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))


# -- the layout is really distributed -------------------------------------------------------------------

DISTRIBUTED = {"users": 6, "orders": 6, "alltypes": 5, "tags": 4, "d_users": 6, "d_orders": 6, "d_types": 6,
               "edge": 3}
GLOBAL = ["products", "countries", "d_products", "g_types", "g_edge", "g_log"]


def partition_kinds(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """partition name -> relkind ('r' local, 'f' foreign) of a partitioned table on one node."""
    return dict(conn.execute(
        "SELECT c.relname::text, c.relkind::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass", (table,)).fetchall())


@needs_shoal
@pytest.mark.parametrize("table", sorted(DISTRIBUTED))
def test_distributed_tables_are_spread_over_every_node(env: Env, table: str) -> None:
    """Each partition is a local table on exactly one node and a foreign table on the others, and every
    node holds some: otherwise the differential tests below would prove little."""
    kinds = {name: partition_kinds(conn, table) for name, conn in zip(env.names, env.nodes, strict=True)}
    parts = set(next(iter(kinds.values())))
    assert len(parts) == DISTRIBUTED[table], kinds
    for name, k in kinds.items():
        assert set(k) == parts, f"{name} has other partitions: {kinds}"
        assert set(k.values()) <= {"r", "f"}, kinds
        assert "r" in k.values(), f"{name} holds no partition of {table}: {kinds}"
    for part in parts:
        local = [name for name, k in kinds.items() if k[part] == "r"]
        assert len(local) == 1, f"{table}.{part} is local on {local}"


@needs_shoal
def test_colocated_tables_have_the_same_placement(env: Env) -> None:
    for a, b in (("users", "orders"), ("d_users", "d_orders")):
        for conn in env.nodes:
            rows = conn.execute(
                "SELECT pg_get_expr(c.relpartbound, c.oid), c.relkind::text, (SELECT array_agg(t.relname) "
                "FROM pg_inherits j JOIN pg_class t ON t.oid = j.inhrelid WHERE j.inhparent = %s::regclass "
                "AND pg_get_expr(t.relpartbound, t.oid) = pg_get_expr(c.relpartbound, c.oid) "
                "AND t.relkind = c.relkind) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass", (b, a)).fetchall()
            assert rows and all(r[2] for r in rows), (a, b, rows)


@needs_shoal
@pytest.mark.parametrize("table", GLOBAL)
def test_global_tables_are_local_everywhere(env: Env, table: str) -> None:
    for name, conn in zip(env.names, env.nodes, strict=True):
        kind = conn.execute("SELECT relkind::text FROM pg_class WHERE oid = %s::regclass",
                            (table,)).fetchone()
        assert kind == ("r",), f"{table} on {name} is {kind}"


@needs_shoal
def test_partitions_view_lists_every_partition(env: Env) -> None:
    """shoal.partitions agrees with the catalog of the node asked, on every node."""
    for name, conn in zip(env.names, env.nodes, strict=True):
        for table, count in DISTRIBUTED.items():
            rows = conn.execute("SELECT partition_name, node, is_local FROM shoal.partitions "
                                "WHERE table_name = %s::regclass", (table,)).fetchall()
            assert len(rows) == count, (name, table, rows)
            kinds = partition_kinds(conn, table)
            for partition, owner, is_local in rows:
                assert is_local == (owner == name), (name, table, rows)
                assert kinds[partition.split(".")[-1].strip('"')] == ("r" if is_local else "f")


# -- read-only queries -------------------------------------------------------------------------------------


def test_every_table_loaded(env: Env) -> None:
    """COPY of every table's rows (a few through each node) worked."""
    assert not env.load_errors, "\n".join(env.load_errors.values())
    for table in data.all_tables():
        env.assert_everywhere(f"SELECT count(*) FROM {table}")


def test_load_local_puts_rows_where_shoal_routes_them(env: Env) -> None:
    """The harness's own loader (load_local, used when shoal's write path fails) agrees with shoal's
    routing: rows it placed are found by key through every node."""
    rows = [(str(k), f"local {k}") for k in range(990_000, 990_040)]
    table = "d_users (user_id, name)"
    load(env.plain, table, rows)
    try:
        expected = run(env.plain, "SELECT * FROM d_users")
        load_local(env, "d_users", expected.rows)
        for k in (990_000, 990_007, 990_039):
            env.assert_everywhere(f"SELECT * FROM d_users WHERE user_id = {k}")
        env.assert_tables(["d_users"])
    finally:
        env.plain.execute("DELETE FROM d_users WHERE user_id >= 990000")
        env.resync(["d_users"])


def test_query_files_parse() -> None:
    assert len(QUERIES) >= 60 and len(DML) >= 40
    assert all(len(c.statements) == 1 for c in QUERIES)
    assert all(c.tables and c.statements for c in DML)


@pytest.mark.parametrize("case", QUERIES, ids=[c.name for c in QUERIES])
def test_query(env: Env, case: Case) -> None:
    env.assert_everywhere(case.statements[0], ordered=case.ordered, what=case.name)


# Prepared reads: (name, query, parameter sets). Each set runs on plain and on every node.
PREPARED_READS: list[tuple[str, str, list[tuple[Any, ...]]]] = [
    ("key_eq", "SELECT * FROM users WHERE user_id = %s",
     [(k,) for k in (0, -7, 1, 42, 1099511627779, 9000000000000000001, 5, 77, 123456)]),
    ("key_eq_text_param", "SELECT user_id, name FROM users WHERE user_id = %s::int8",
     [(str(k),) for k in (0, -7, 42, 77, 3, 9, 11, 13)]),
    ("key_in", "SELECT user_id, score FROM users WHERE user_id IN (%s, %s, %s)",
     [(a, a + 1, a * 7) for a in (0, 1, 2, 3, 40, 99, 500, 1000, -7)]),
    ("key_any", "SELECT user_id, email FROM users WHERE user_id = ANY(%s)",
     [([k, k + 1, k + 2, -7],) for k in range(0, 3000, 350)]),
    ("key_and_range", "SELECT * FROM orders WHERE user_id = %s AND order_id > %s",
     [(0, 0), (-7, 50000), (42, 0), (100001, 1000), (100002, 0), (5, 5), (7, 7), (9, 9)]),
    ("colocated_join", "SELECT u.name, o.order_id, o.amount FROM users u JOIN orders o USING (user_id) "
                       "WHERE u.user_id = %s",
     [(k,) for k in (0, -7, 1, 2, 3, 4, 100001, 9000000000000000001)]),
    ("global_join", "SELECT o.order_id, p.name FROM orders o JOIN products p USING (product_id) "
                    "WHERE o.user_id = %s AND p.product_id < %s",
     [(k, 30) for k in (0, -7, 1, 2, 3, 4, 5, 6)]),
    ("text_key", "SELECT * FROM tags WHERE tag = %s",
     [(t,) for t in ("", "ünïcödé", "with space", "nope", "ann-1", "zoë-2", "x", "y")]),
    ("types_key", "SELECT * FROM alltypes WHERE k = %s", [(k,) for k in (1, 38, 75, -11, -21, 112, 0, 149)]),
    ("null_param", "SELECT count(*) FROM users WHERE user_id = %s OR email = %s",
     [(None, None), (1, None), (None, "x"), (0, None), (None, None), (-7, "y"), (None, None), (None, None)]),
    ("aggregate_by_key", "SELECT count(*), sum(amount), max(ordered_at) FROM orders WHERE user_id = ANY(%s)",
     [([k for k in range(s, s + 400)],) for s in range(0, 3200, 400)]),
]


def typed(params: Sequence[Any]) -> tuple[Any, ...]:
    """Python ints as int8 (psycopg would pick int2, int4 or numeric by value, and so prepare another
    statement for each parameter type)."""
    def one(value: Any) -> Any:
        if isinstance(value, list):
            return [one(v) for v in value]
        return Int8(value) if isinstance(value, int) and not isinstance(value, bool) else value
    return tuple(one(v) for v in params)


def _user_keys(env: Env) -> list[int]:
    return [int(r[0]) for r in env.plain.execute("SELECT user_id FROM users ORDER BY user_id").fetchall()]


@pytest.mark.parametrize("generic", [False, True], ids=["auto_plans", "force_generic_plan"])
@pytest.mark.parametrize("name,query,param_sets", PREPARED_READS, ids=[p[0] for p in PREPARED_READS])
def test_prepared_read(env: Env, name: str, query: str, param_sets: list[tuple[Any, ...]],
                       generic: bool) -> None:
    """Server-side prepared statements (psycopg prepare=True) run 8+ times: custom plans first, then the
    generic plan with runtime pruning; with force_generic_plan it is generic from the first run."""
    keys = _user_keys(env)
    if name in ("key_eq", "colocated_join"):
        param_sets = param_sets + [(k,) for k in keys[::60]]
    conns = [connect(env.plain_conninfo)] + [connect(c) for c in env.conninfos]
    try:
        for conn in conns:
            conn.execute("SET plan_cache_mode = " + ("force_generic_plan" if generic else "auto"))
        for params in param_sets:
            params = typed(params)
            expected = run(conns[0], query, params, prepare=True)
            got = {n: run(c, query, params, prepare=True) for n, c in zip(env.names, conns[1:], strict=True)}
            assert_same(f"{name} with {params}", expected, got)
        if generic:
            for n, conn in zip(env.names, conns[1:], strict=True):
                row = conn.execute("SELECT sum(generic_plans), sum(custom_plans) FROM pg_prepared_statements"
                                   ).fetchone()
                assert row and row[0] and not row[1], f"{n}: plans (generic, custom): {row}"
    finally:
        for conn in conns:
            conn.close()


COPY_TO = [
    ("users_text", "COPY (SELECT * FROM users ORDER BY user_id) TO STDOUT"),
    ("users_csv_header", "COPY (SELECT * FROM users ORDER BY user_id) TO STDOUT (FORMAT csv, HEADER)"),
    ("users_binary", "COPY (SELECT * FROM users ORDER BY user_id) TO STDOUT (FORMAT binary)"),
    ("alltypes_text", "COPY (SELECT * FROM alltypes ORDER BY k) TO STDOUT"),
    ("alltypes_csv",
     "COPY (SELECT * FROM alltypes ORDER BY k) TO STDOUT (FORMAT csv, NULL 'NULL', QUOTE '''')"),
    ("alltypes_binary", "COPY (SELECT * FROM alltypes ORDER BY k) TO STDOUT (FORMAT binary)"),
    ("join_text", "COPY (SELECT u.user_id, o.order_id, p.name FROM users u JOIN orders o USING (user_id) "
                  "JOIN products p USING (product_id) ORDER BY 1, 2) TO STDOUT"),
    ("key_eq_csv", "COPY (SELECT * FROM orders WHERE user_id = 0 ORDER BY order_id) TO STDOUT (FORMAT csv)"),
]


@pytest.mark.parametrize("statement", [c[1] for c in COPY_TO], ids=[c[0] for c in COPY_TO])
def test_copy_to_query(env: Env, statement: str) -> None:
    expected = copy_out(env.plain, statement)
    assert expected
    for name, conn in zip(env.names, env.nodes, strict=True):
        got, outcome = copy_out_outcome(conn, statement)
        assert outcome.sqlstate is None, f"{name}: {outcome.short()}"
        assert got == expected, f"{name}: COPY output differs from plain PostgreSQL"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", ["users", "alltypes", "products"])
def test_copy_table_to(env: Env, table: str, fmt: str) -> None:
    """COPY table TO STDOUT, as users do on a plain table (PostgreSQL refuses it on a partitioned one)."""
    statement = f"COPY {table} TO STDOUT (FORMAT {fmt})"
    expected = copy_out(env.plain, statement)
    for name, conn in zip(env.names, env.nodes, strict=True):
        got, outcome = copy_out_outcome(conn, statement)
        assert outcome.sqlstate is None, f"{name}: {outcome.short()}"
        assert got is not None
        if fmt == "binary":  # header, tuples, trailer: the tuples may come in another order
            assert len(got) == len(expected) and got[:19] == expected[:19] and got[-2:] == expected[-2:], name
            probe = connect(env.plain_conninfo)
            try:
                probe.execute(f"CREATE TEMP TABLE probe (LIKE {table})")
                copy_in(probe, "COPY probe FROM STDIN (FORMAT binary)", got)
                expected_rows = run(env.plain, f"SELECT * FROM {table}")
                assert_same(f"{table} through binary COPY from {name}", expected_rows,
                            {name: run(probe, "SELECT * FROM probe")})
            finally:
                probe.close()
        else:
            assert sorted(got.splitlines()) == sorted(expected.splitlines()), name


# -- writes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index,case", list(enumerate(DML)), ids=[c.name for c in DML])
def test_dml(env: Env, index: int, case: Case) -> None:
    """The case's statements on plain PostgreSQL and on one node (n1, n2, n3 in turn)."""
    env.resync_case(case.statements, case.tables)
    name, conn = env.node(index)
    try:
        for statement in case.statements:
            expected = run(env.plain, statement)
            got = run(conn, statement)
            assert_same(f"{case.name} on {name}: {statement}", expected, {name: got})
    finally:
        for c in (env.plain, conn):
            if c.info.transaction_status != pq.TransactionStatus.IDLE:
                c.execute("ROLLBACK")
    env.assert_tables(case.tables)


PREPARED_WRITES: list[tuple[str, str, list[tuple[Any, ...]], tuple[str, ...]]] = [
    ("insert", "INSERT INTO d_users (user_id, name, score) VALUES (%s, %s, %s) RETURNING *",
     [(50000 + i, f"p{i}", i) for i in range(9)] + [(50000, "dup", 0)], ("d_users",)),
    ("update_by_key", "UPDATE d_users SET score = score + %s WHERE user_id = %s RETURNING user_id, score",
     [(i, 50000 + i) for i in range(9)] + [(1, 0), (1, -7), (1, 424242)], ("d_users",)),
    ("upsert", "INSERT INTO d_users (user_id, name) VALUES (%s, %s) "
               "ON CONFLICT (user_id) DO UPDATE SET name = excluded.name RETURNING *",
     [(50000 + i * 2, f"up{i}") for i in range(9)], ("d_users",)),
    ("update_key", "UPDATE d_users SET user_id = %s WHERE user_id = %s RETURNING user_id, name",
     [(60000 + i, 50000 + i) for i in range(9)], ("d_users",)),
    ("update_by_key_any",
     "UPDATE d_orders SET qty = qty + 1 WHERE user_id = ANY(%s) RETURNING user_id, order_id",
     [([60000 + i, 0, -7, 10001],) for i in range(8)], ("d_orders",)),
    ("delete_by_key", "DELETE FROM d_users WHERE user_id = %s RETURNING user_id",
     [(60000 + i,) for i in range(0, 9, 2)] + [(99999999,), (60000,), (60002,)], ("d_users",)),
    ("insert_global", "INSERT INTO d_products VALUES (%s, %s, %s) RETURNING *",
     [(7000 + i, f"gp{i}", i) for i in range(8)], ("d_products",)),
    ("update_global", "UPDATE d_products SET price = price + %s WHERE product_id = %s RETURNING *",
     [(1, 7000 + i) for i in range(8)], ("d_products",)),
]


@pytest.mark.parametrize("name,query,param_sets,tables", PREPARED_WRITES, ids=[p[0] for p in PREPARED_WRITES])
@pytest.mark.parametrize("generic", [False, True], ids=["auto_plans", "force_generic_plan"])
def test_prepared_write(env: Env, name: str, query: str, param_sets: list[tuple[Any, ...]],
                        tables: tuple[str, ...], generic: bool) -> None:
    env.resync(tables)
    node_name, _ = env.node(len(name) + generic)
    plain = connect(env.plain_conninfo)
    conn = connect(env.conninfos[env.names.index(node_name)])
    try:
        for c in (plain, conn):
            c.execute("SET plan_cache_mode = " + ("force_generic_plan" if generic else "auto"))
        if generic and name == "insert":  # the auto_plans round left these rows: start again
            for c in (plain, conn):
                c.execute("DELETE FROM d_users WHERE user_id >= 50000 AND user_id < 70000")
                c.execute("DELETE FROM d_products WHERE product_id >= 7000")
        for params in param_sets:
            params = typed(params)
            assert_same(f"{name} with {params} on {node_name}", run(plain, query, params, prepare=True),
                        {node_name: run(conn, query, params, prepare=True)})
    finally:
        plain.close()
        conn.close()
    env.assert_tables(tables)


def _types_columns(env: Env) -> str:
    row = env.plain.execute(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = 'alltypes'::regclass AND attnum > 1 AND NOT attisdropped").fetchone()
    assert row
    return str(row[0])


@pytest.mark.parametrize("index,fmt", list(enumerate(FORMATS)), ids=FORMATS)
def test_copy_from(env: Env, index: int, fmt: str) -> None:
    """COPY FROM STDIN in each format into a distributed and a global table, on n1, n2, n3."""
    env.resync(["d_types", "g_types"])
    offset = 1_000_000 * (index + 1)
    payload = copy_out(env.plain, f"COPY (SELECT k + {offset}, {_types_columns(env)} FROM alltypes) "
                                  f"TO STDOUT (FORMAT {fmt})")
    name, conn = env.node(index)
    for table in ("d_types", "g_types"):
        statement = f"COPY {table} FROM STDIN (FORMAT {fmt})"
        assert_same(f"{statement} on {name}", copy_in(env.plain, statement, payload),
                    {name: copy_in(conn, statement, payload)})
    env.assert_tables(["d_types", "g_types"])


def test_copy_from_column_list_and_defaults(env: Env) -> None:
    env.resync(["d_users"])
    payload = "".join(f"{70000 + i},copy {i},{'' if i % 3 else 'x@y'}\n" for i in range(150)).encode()
    statement = "COPY d_users (user_id, name, email) FROM STDIN (FORMAT csv)"
    name, conn = env.node(1)
    assert_same(statement, copy_in(env.plain, statement, payload), {name: copy_in(conn, statement, payload)})
    env.assert_tables(["d_users"])


@pytest.mark.parametrize("bad_row", ["70001\tduplicate\n", "80999\t\\N\n", "not a number\tx\n"],
                         ids=["duplicate_key", "null_in_not_null", "bad_input"])
def test_copy_from_failing_last_row_inserts_nothing(env: Env, bad_row: str) -> None:
    """COPY whose last row fails: nothing of it may stay on any node (the rows before went to every
    node's partitions)."""
    env.resync(["d_users"])
    payload = ("".join(f"{80000 + i}\tcopied {i}\n" for i in range(200)) + bad_row).encode()
    statement = "COPY d_users (user_id, name) FROM STDIN"
    name, conn = env.node(2)
    expected = copy_in(env.plain, statement, payload)
    assert expected.sqlstate
    assert_same(statement, expected, {name: copy_in(conn, statement, payload)})
    env.assert_tables(["d_users"])


# -- DDL, compared with plain PostgreSQL --------------------------------------------------------------------

SHAPE = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = '{t}'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
CONSTRAINTS = "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '{t}'::regclass"
INDEXES = ("SELECT c.relname, replace(pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON ') FROM pg_index i "
           "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = '{t}'::regclass")
INFO_KEYS = """
SELECT kcu.column_name, tc.constraint_type FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage kcu USING (constraint_name, table_name) WHERE tc.table_name = '{t}'
"""
PARTITION_SHAPES = """
SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = '{t}'::regclass AND (
    SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute
    WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped
) IS DISTINCT FROM (
    SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute
    WHERE attrelid = '{t}'::regclass AND attnum > 0 AND NOT attisdropped)
"""

DDL_STEPS = [
    "INSERT INTO x_ddl SELECT g, 'v' || g FROM generate_series(1, 60) g",
    "ALTER TABLE x_ddl ADD COLUMN w int4 DEFAULT 7",
    "INSERT INTO x_ddl (id, v) VALUES (61, 'after add column') RETURNING *",
    "ALTER TABLE x_ddl ALTER COLUMN w SET DEFAULT 8",
    "INSERT INTO x_ddl (id, v) VALUES (62, 'after set default') RETURNING *",
    "ALTER TABLE x_ddl RENAME COLUMN v TO val",
    "UPDATE x_ddl SET val = upper(val), w = w + id WHERE id % 4 = 0 RETURNING id, val, w",
    "ALTER TABLE x_ddl ADD COLUMN z numeric(6, 2)",
    "UPDATE x_ddl SET z = id / 7.0 RETURNING id, z",
    "ALTER TABLE x_ddl DROP COLUMN w",
    "ALTER TABLE x_ddl ALTER COLUMN z TYPE numeric(8, 3)",
    "CREATE INDEX x_ddl_val_idx ON x_ddl (val)",
    "SELECT id, val FROM x_ddl WHERE val = 'v13'",
    "ALTER TABLE x_ddl ADD CONSTRAINT x_ddl_val_len CHECK (length(val) < 20)",
    "INSERT INTO x_ddl (id, val) VALUES (63, 'a value much too long for the check')",
    "SELECT id, val FROM x_ddl WHERE val = 'v13'",
    "DROP INDEX x_ddl_val_idx",
    "ALTER TABLE x_ddl ALTER COLUMN val SET NOT NULL",
    "INSERT INTO x_ddl (id, val) VALUES (64, NULL)",
    "ALTER TABLE x_ddl ALTER COLUMN val DROP NOT NULL",
    "INSERT INTO x_ddl (id, val) VALUES (64, NULL) RETURNING *",
    "TRUNCATE x_ddl",
    "INSERT INTO x_ddl (id, val, z) SELECT g, 'again ' || g, g FROM generate_series(1, 30) g",
    "ALTER TABLE x_ddl DROP CONSTRAINT x_ddl_val_len",
    "INSERT INTO x_ddl (id, val) VALUES (65, 'a value much too long for the check') RETURNING id",
]


def _ddl_state(env: Env, table: str) -> None:
    """Columns (types, defaults, NOT NULL), CHECK constraints and rows as on plain, seen from every node, and
    every partition with the parent's columns. (Keys and indexes: test_keys_and_indexes_as_on_plain.)"""
    env.assert_everywhere(SHAPE.format(t=table), what=f"columns of {table}")
    checks = CONSTRAINTS.format(t=table) + " AND contype = 'c'"
    env.assert_everywhere(checks, what=f"CHECK constraints of {table}")
    env.assert_tables([table])
    for name, conn in zip(env.names, env.nodes, strict=True):
        if env.shoal:
            known = conn.execute("SELECT count(*) FROM shoal.partitions WHERE table_name = %s::regclass",
                                 (table,)).fetchone()
            assert known == (4,), f"{name}: shoal.partitions lists {known} partitions of {table}, not 4"
        stale = run(conn, PARTITION_SHAPES.format(t=table))
        assert stale.rows == (("0",),), f"{name}: partitions whose columns differ from {table}'s: {stale}"


@pytest.mark.parametrize("table", ["users", "orders", "d_users", "g_types", "tags"])
def test_keys_and_indexes_as_on_plain(env: Env, table: str) -> None:
    """The primary keys and indexes declared in schema.sql show on the table as on plain PostgreSQL (what
    psql's \\d, information_schema, ORMs and ON CONFLICT look at)."""
    env.assert_everywhere(CONSTRAINTS.format(t=table), what=f"constraints of {table}")
    env.assert_everywhere(INDEXES.format(t=table), what=f"indexes of {table}")
    env.assert_everywhere(INFO_KEYS.format(t=table), what=f"information_schema keys of {table}")


def test_distribute_table_with_rows_and_indexes(env: Env) -> None:
    """create_distributed_table on a table that already has rows, a secondary index, a unique index with
    the key and a CHECK constraint: the rows are moved, and everything still behaves as on plain."""
    create = ["CREATE TABLE x_existing (id int8 PRIMARY KEY, grp int4 CHECK (grp >= 0), v text)",
              "CREATE INDEX x_existing_grp_idx ON x_existing (grp)",
              "CREATE UNIQUE INDEX x_existing_id_v_key ON x_existing (id, v)",
              "INSERT INTO x_existing SELECT g, g % 10, 'v' || g FROM generate_series(1, 300) g"]
    name, conn = env.node(1)
    for statement in create:
        env.plain.execute(statement)
        conn.execute(statement)
    try:
        if env.shoal:
            conn.execute("SELECT shoal.create_distributed_table('x_existing', 'id', 4)")
        _ddl_state(env, "x_existing")
        for i, step in enumerate(["INSERT INTO x_existing VALUES (1, 1, 'dup')",
                                  "INSERT INTO x_existing VALUES (301, -1, 'negative')",
                                  "UPDATE x_existing SET grp = grp + 1 WHERE id % 7 = 0 RETURNING *",
                                  "SELECT grp, count(*) FROM x_existing GROUP BY grp"]):
            other, c = env.node(i)
            assert_same(f"{step} on {other}", run(env.plain, step), {other: run(c, step)})
        _ddl_state(env, "x_existing")
    finally:
        env.plain.execute("DROP TABLE x_existing")
        conn.execute("DROP TABLE IF EXISTS x_existing")


def test_unique_index_with_the_key_after_distribution(env: Env) -> None:
    """The issue: unique constraints that include the distribution column work; here one comes after the
    table was distributed."""
    name, conn = env.node(2)
    create = "CREATE TABLE x_unique (id int8 PRIMARY KEY, v text)"
    env.plain.execute(create)
    conn.execute(create + (" WITH (distributed_by = 'id', num_parts = 4)" if env.shoal else ""))
    try:
        for i, step in enumerate(["INSERT INTO x_unique SELECT g, 'v' || g FROM generate_series(1, 50) g",
                                  "CREATE UNIQUE INDEX x_unique_id_v_key ON x_unique (id, v)",
                                  "ALTER TABLE x_unique ADD CONSTRAINT x_unique_v_id UNIQUE (v, id)",
                                  "INSERT INTO x_unique VALUES (7, 'v7')",
                                  "INSERT INTO x_unique VALUES (51, 'v51') ON CONFLICT (id, v) DO NOTHING"]):
            other, c = env.node(i)
            assert_same(f"{step} on {other}", run(env.plain, step), {other: run(c, step)})
        env.assert_tables(["x_unique"])
    finally:
        env.plain.execute("DROP TABLE x_unique")
        conn.execute("DROP TABLE IF EXISTS x_unique")


def test_ddl_reaches_every_node(env: Env) -> None:
    """A table created on one node, then ALTER TABLE, CREATE/DROP INDEX, TRUNCATE, DROP TABLE each issued on
    another node: after each step every node's columns, constraints, indexes and rows match plain's."""
    env.plain.execute("CREATE TABLE x_ddl (id int8 PRIMARY KEY, v text)")
    create = "CREATE TABLE x_ddl (id int8 PRIMARY KEY, v text)"
    if env.shoal:
        create += " WITH (distributed_by = 'id', num_parts = 4)"
    env.nodes[1].execute(create)
    _ddl_state(env, "x_ddl")
    for i, step in enumerate(DDL_STEPS):
        name, conn = env.node(i)
        assert_same(f"{step} on {name}", run(env.plain, step), {name: run(conn, step)})
        _ddl_state(env, "x_ddl")
    name, conn = env.node(2)
    for c in (env.plain, conn):
        c.execute("ALTER TABLE x_ddl RENAME TO x_ddl2")
    _ddl_state(env, "x_ddl2")
    for c in (env.plain, env.node(0)[1]):
        c.execute("DROP TABLE x_ddl2")
    for name, conn in zip(env.names, env.nodes, strict=True):
        left = conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'x\\_ddl%'").fetchall()
        assert left == [], f"{name} still has {left}"
        if env.shoal:
            assert conn.execute("SELECT count(*) FROM shoal.partitions WHERE table_name::text LIKE 'x_ddl%'"
                                ).fetchone() == (0,), name


# -- bad input: a clear error, nothing half-done ---------------------------------------------------------

FINGERPRINT = """
SELECT n.nspname, c.relname, c.relkind,
    (SELECT array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull
            THEN ' not null' ELSE '' END || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
            ORDER BY a.attnum)
       FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
    (SELECT array_agg(conname || ' ' || pg_get_constraintdef(oid) ORDER BY conname) FROM pg_constraint
      WHERE conrelid = c.oid),
    pg_get_expr(c.relpartbound, c.oid),
    (SELECT array_agg(i.inhparent::regclass::text) FROM pg_inherits i WHERE i.inhrelid = c.oid),
    (SELECT ftoptions::text FROM pg_foreign_table WHERE ftrelid = c.oid),
    (SELECT array_agg(tgname ORDER BY tgname) FROM pg_trigger WHERE tgrelid = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
"""
CATALOG_TABLES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'shoal' AND c.relkind = 'r'
"""
ROW_COUNTS = """
SELECT string_agg(format('%I %s', c.relname, (xpath('/row/n/text()', query_to_xml(
    format('SELECT count(*) AS n FROM ONLY %I.%I', n.nspname, c.relname), false, true, '')))[1]), ', '
    ORDER BY c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'
"""


def fingerprint(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything a failed operation must leave as it was on a node: the relations of every schema with
    their columns, constraints, partition bounds, foreign-table options and triggers, the rows of shoal's
    catalog tables, and how many rows each local table holds."""
    out: dict[str, Any] = {"relations": sorted(map(str, conn.execute(FINGERPRINT).fetchall()))}
    for (table,) in conn.execute(CATALOG_TABLES).fetchall():
        out[table] = sorted(map(str, conn.execute(f"SELECT * FROM {table}").fetchall()))
    out["servers"] = sorted(map(str, conn.execute("SELECT srvname, srvoptions FROM pg_foreign_server")))
    out["rows"] = conn.execute(ROW_COUNTS).fetchone()
    return out


def fingerprints(env: Env) -> dict[str, dict[str, Any]]:
    return {name: fingerprint(conn) for name, conn in zip(env.names, env.nodes, strict=True)}


def assert_unchanged(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> None:
    for name in before:
        for key in before[name].keys() | after[name].keys():
            old, new = before[name].get(key), after[name].get(key)
            if old != new:
                if isinstance(old, list) and isinstance(new, list):
                    detail = f"gone {sorted(set(old) - set(new))[:5]}, new {sorted(set(new) - set(old))[:5]}"
                else:
                    detail = f"{old} -> {new}"
                pytest.fail(f"{name}: {key} changed: {detail}", pytrace=False)


def expect_clear_error(conn: psycopg.Connection[Any], statement: str, *words: str) -> psycopg.Error:
    """The statement fails with a one-line message naming what is wrong (one of words, if given)."""
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        message = exc.diag.message_primary or ""
        assert message and len(message) < 400 and "Traceback" not in message, f"unclear error: {exc}"
        if words:
            named = any(w.lower() in message.lower() for w in words)
            assert named, f"{statement}: {message!r} names none of {words}"
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        return exc
    pytest.fail(f"no error from {statement}", pytrace=False)


def assert_cluster_works(env: Env) -> None:
    env.assert_everywhere("SELECT count(*), sum(user_id) FROM users")
    env.assert_tables(["d_users", "d_orders", "d_products"])


@pytest.fixture
def guard(env: Env) -> Iterator[Env]:
    """Checks that the cluster still answers like plain PostgreSQL after the test."""
    if not env.shoal:
        pytest.skip("checks shoal itself, not a plain node")
    env.resync(["d_users", "d_orders", "d_products"])
    yield env
    assert_cluster_works(env)


# A local table on the node that is asked to distribute it; (statement, words one of which the error names).
BAD_DISTRIBUTIONS = [
    ("missing_column", "CREATE TABLE bad (a int8, b text)",
     "SELECT shoal.create_distributed_table('bad', 'nope')", ("nope",)),
    ("missing_column_ddl", None,
     "CREATE TABLE bad (a int8, b text) WITH (distributed_by = 'nope')", ("nope",)),
    ("point_not_hashable", "CREATE TABLE bad (p point, a int8)",
     "SELECT shoal.create_distributed_table('bad', 'p')", ("point", "hash")),
    ("point_not_hashable_ddl", None,
     "CREATE TABLE bad (p point, a int8) WITH (distributed_by = 'p', num_parts = 4)", ("point", "hash")),
    ("json_not_hashable", "CREATE TABLE bad (j json, a int8)",
     "SELECT shoal.create_distributed_table('bad', 'j')", ("json", "hash")),
    ("unique_without_key", "CREATE TABLE bad (id int8, email text UNIQUE)",
     "SELECT shoal.create_distributed_table('bad', 'id')", ("unique", "email", "bad_email_key")),
    ("unique_without_key_ddl", None,
     "CREATE TABLE bad (id int8, email text UNIQUE) WITH (distributed_by = 'id')", ("unique", "email")),
    ("primary_key_without_key", "CREATE TABLE bad (id int8, other int8 PRIMARY KEY)",
     "SELECT shoal.create_distributed_table('bad', 'id')", ("primary", "unique", "other", "bad_pkey")),
    ("unique_index_without_key",
     "CREATE TABLE bad (id int8, email text); CREATE UNIQUE INDEX bad_e ON bad (email)",
     "SELECT shoal.create_distributed_table('bad', 'id')", ("unique", "email", "bad_e")),
    ("colocate_other_partition_count", "CREATE TABLE bad (user_id int8)",
     "SELECT shoal.create_distributed_table('bad', 'user_id', 4, 'users')",
     ("partition", "coloca", "6", "4")),
    ("colocate_other_partition_count_ddl", None,
     "CREATE TABLE bad (user_id int8) "
     "WITH (distributed_by = 'user_id', num_parts = 3, colocate_with = 'users')",
     ("partition", "coloca", "6", "3")),
    ("colocate_other_key_type", "CREATE TABLE bad (user_id text)",
     "SELECT shoal.create_distributed_table('bad', 'user_id', 6, 'users')",
     ("type", "text", "bigint", "coloca")),
    ("colocate_with_global", "CREATE TABLE bad (product_id int4)",
     "SELECT shoal.create_distributed_table('bad', 'product_id', colocate_with => 'products')",
     ("products", "global", "distributed", "coloca")),
    ("zero_partitions", "CREATE TABLE bad (a int8)", "SELECT shoal.create_distributed_table('bad', 'a', 0)",
     ("partition", "0")),
    ("already_distributed", None, "SELECT shoal.create_distributed_table('d_users', 'user_id')",
     ("already", "distributed")),
    ("global_already_distributed", None, "SELECT shoal.create_global_table('d_users')",
     ("already", "distributed")),
]


@pytest.mark.parametrize("index,name,prepare,statement,words",
                         [(i, *b) for i, b in enumerate(BAD_DISTRIBUTIONS)],
                         ids=[b[0] for b in BAD_DISTRIBUTIONS])
def test_bad_distribution_is_refused(guard: Env, index: int, name: str, prepare: str | None, statement: str,
                                     words: tuple[str, ...]) -> None:
    env = guard
    node, conn = env.node(index)
    if prepare:
        for part in prepare.split(";"):
            conn.execute(part)
    try:
        before = fingerprints(env)
        expect_clear_error(conn, statement, *words)
        assert_unchanged(before, fingerprints(env))
    finally:
        conn.execute("DROP TABLE IF EXISTS bad")


def test_remove_node_that_does_not_exist(guard: Env) -> None:
    before = fingerprints(guard)
    expect_clear_error(guard.nodes[1], "SELECT shoal.remove_node('nosuch')", "nosuch")
    assert_unchanged(before, fingerprints(guard))


def test_remove_node_holding_partitions_is_refused(guard: Env) -> None:
    before = fingerprints(guard)
    exc = expect_clear_error(guard.nodes[0], "SELECT shoal.remove_node('n3')", "n3")
    assert exc.diag.message_hint, "no hint on what to do"
    assert_unchanged(before, fingerprints(guard))


@dataclass(frozen=True)
class OneNodeConflict:
    """An object created on one node only that makes a DDL statement, issued on another node, fail there."""

    name: str
    conflict_node: int
    conflict: str
    issue_node: int
    statement: str
    cleanup: str


ONE_NODE_CONFLICTS = [
    OneNodeConflict("add_constraint_index_name_taken", 2, "CREATE TABLE conflict_idx (x int)", 0,
                    "ALTER TABLE d_users ADD COLUMN extra int, "
                    "ADD CONSTRAINT conflict_idx UNIQUE (user_id, extra)",
                    "DROP TABLE conflict_idx"),
    OneNodeConflict("create_index_name_taken", 1, "CREATE TABLE dup_name_idx (x int)", 0,
                    "CREATE INDEX dup_name_idx ON d_orders (status)", "DROP TABLE dup_name_idx"),
    OneNodeConflict("rename_table_name_taken", 2, "CREATE TABLE d_users_renamed (x int)", 1,
                    "ALTER TABLE d_users RENAME TO d_users_renamed", "DROP TABLE d_users_renamed"),
    OneNodeConflict("add_column_type_missing", 0, "CREATE TYPE only_here AS (a int)", 2,
                    "ALTER TABLE d_orders ADD COLUMN c only_here", "DROP TYPE only_here"),
    OneNodeConflict("drop_table_with_local_view", 1, "CREATE VIEW dep_view AS SELECT * FROM d_products", 0,
                    "DROP TABLE d_products", "DROP VIEW dep_view"),
    OneNodeConflict("drop_distributed_table_with_local_view", 2,
                    "CREATE VIEW dep_view2 AS SELECT * FROM d_orders", 0, "DROP TABLE d_orders",
                    "DROP VIEW dep_view2"),
    OneNodeConflict("truncate_global_referenced_locally", 2,
                    "CREATE TABLE fk_child (pid int4 REFERENCES d_products)", 1, "TRUNCATE d_products",
                    "DROP TABLE fk_child"),
    OneNodeConflict("alter_type_of_column_in_local_view", 0,
                    "CREATE VIEW dep_view3 AS SELECT user_id, name FROM d_users", 1,
                    "ALTER TABLE d_users ALTER COLUMN name TYPE varchar(10)", "DROP VIEW dep_view3"),
]


@pytest.mark.parametrize("case", ONE_NODE_CONFLICTS, ids=[c.name for c in ONE_NODE_CONFLICTS])
def test_ddl_failing_on_one_node_changes_no_node(guard: Env, case: OneNodeConflict) -> None:
    env = guard
    env.nodes[case.conflict_node].execute(case.conflict)
    try:
        before = fingerprints(env)
        expect_clear_error(env.nodes[case.issue_node], case.statement)
        assert_unchanged(before, fingerprints(env))
    finally:
        env.nodes[case.conflict_node].execute(case.cleanup)


def test_ddl_failing_on_data_of_a_remote_partition_changes_no_node(guard: Env) -> None:
    """A CHECK constraint that only rows of one remote partition violate: plain fails too, and no node may
    keep the constraint."""
    env = guard
    rows = env.nodes[0].execute("SELECT partition_name FROM shoal.partitions WHERE node = 'n3' "
                                "AND table_name = 'd_orders'::regclass ORDER BY part LIMIT 1").fetchall()
    assert rows, "n3 holds no partition of d_orders"
    partition = rows[0][0]
    key = env.nodes[2].execute(f"SELECT user_id FROM {partition} LIMIT 1").fetchone()
    assert key
    statement = ("UPDATE d_orders SET qty = 999 WHERE user_id = %s "
                 "AND order_id = (SELECT min(order_id) FROM d_orders WHERE user_id = %s)")
    for c in (env.plain, env.nodes[2]):
        c.execute(statement, (key[0], key[0]))
    env.assert_tables(["d_orders"])
    before = fingerprints(env)
    check = "ALTER TABLE d_orders ADD CONSTRAINT qty_small CHECK (qty < 100)"
    assert run(env.plain, check).sqlstate == "23514"
    expect_clear_error(env.nodes[0], check, "qty_small", "violat")
    assert_unchanged(before, fingerprints(env))
