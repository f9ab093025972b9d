"""Benchmark: the binary fast path of shoal_fdw against file_fdw (issue 2, item 5).

One throwaway PostgreSQL 15 server with the shoal extension preloaded scans the same rows three
ways, with one query that needs every column decoded:

* ``shoal_fdw``: a Python handler (``bench/handlers/binary_file.py``) yields a binary COPY file in
  chunks, untouched; the extension decodes the tuples in C;
* ``file_fdw``: PostgreSQL's C wrapper reads the same rows from a CSV file;
* ``local heap``: the table the files were written from, as a reference.

The rows have four columns: ``c1 int8`` (1..N), ``c2 int4`` (scrambled), ``c3 text`` (10 to 30
ASCII characters, 20 on average) and ``c4`` (``timestamptz`` unless ``--c4`` says otherwise).  The
systems take turns, in a rotating order, ``--repeat`` times after one warm-up each; the best and
median times are reported, and the ratio is file_fdw's time over the system's (above 1.0: faster
than file_fdw).  JIT and parallel query are off so that every system runs in one process, as the
foreign scans do.

Run it as root (the server then runs as the ``postgres`` user) or as an ordinary user::

    python bench/fastpath.py                # or: python -m bench.fastpath
    python bench/fastpath.py --rows 100000 --repeat 3

Results go to ``bench/results/`` (JSON and a Markdown table, also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# `bench` must be importable; the installed `shoal` must win over the source tree.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO] + [str(REPO)]

import psycopg  # noqa: E402

from bench.pgnode import PgNode  # noqa: E402
from bench.report import cpu_model, git_revision, progress  # noqa: E402
from shoal import osuser  # noqa: E402

HANDLERS = REPO / "bench" / "handlers"
RESULTS = REPO / "bench" / "results"
DEFAULT_CHUNK_BYTES = 256 * 1024

# c4's type and how the generated rows fill it (i is the row number, a bigint).
C4_TYPES = {
    "timestamptz": "timestamptz '2024-01-01 00:00:00+00' + i * interval '1.5 seconds'",
    "float8": "(i * 1.000123 / 3)::float8",
    "numeric": "round(i * 1.000123 / 3, 4)",
}

QUERY = "SELECT count(*), sum(c1), max(c2), max(length(c3)), max(c4) FROM {table}"

# name in the report, table
SYSTEMS = [
    ("shoal_fdw binary fast path", "t_shoal"),
    ("file_fdw (CSV)", "t_file"),
    ("local heap table (reference)", "t_local"),
]
BASELINE = "file_fdw (CSV)"
FASTPATH = "shoal_fdw binary fast path"




@dataclass
class SystemResult:
    """The timings of one system."""

    name: str
    table: str
    times: list[float] = field(default_factory=list)
    best: float = 0.0
    median: float = 0.0
    rows_per_s: float = 0.0
    rows_per_s_median: float = 0.0
    ratio: float = 0.0  # file_fdw's best time / this system's best time
    ratio_median: float = 0.0
    output_columns: list[str] = field(default_factory=list)


def make_server(workdir: Path, user: str, python_path: Path) -> PgNode:
    """A throwaway server in `workdir` with the extension preloaded, reached over its Unix socket."""
    return PgNode("fastpath", workdir, None, {
        "shared_preload_libraries": "shoal",
        "shoal.python_path": str(python_path),
        "timezone": "UTC",
        # One process per scan on every side; JIT would only add compile time to some plans.
        "jit": "off",
        "max_parallel_workers_per_gather": 0,
        # The local table (about 90 MB for 1M rows) stays in shared buffers.
        "shared_buffers": "512MB",
        # Loading the data is set-up, not what we measure.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_wal_size": "4GB",
    }, user=user)


def handlers_dir(workdir: Path, user: str) -> Path:
    """bench/handlers when the server's OS user can read it, else a copy in the work directory."""
    probe = HANDLERS / "binary_file.py"
    readable = osuser.run_as(user, ["test", "-r", str(probe)], check=False).returncode == 0
    if readable:
        return HANDLERS
    copy = workdir / "handlers"
    copy.mkdir()
    shutil.copy(probe, copy / probe.name)
    osuser.chown_to(copy, user)
    osuser.chown_to(copy / probe.name, user)
    return copy


def load(cur: psycopg.Cursor[Any], workdir: Path, rows: int, c4: str, chunk_bytes: int) -> dict[str, int]:
    """Create the local table, write it to a binary and a CSV file, and define both foreign tables."""
    columns = f"c1 int8, c2 int4, c3 text, c4 {c4}"
    progress(f"generating {rows:,} rows ({columns}) in a local table")
    cur.execute(f"CREATE TABLE t_local ({columns})")
    cur.execute(
        f"""INSERT INTO t_local
            SELECT i,
                   ((i * 2654435761) %% 2000000000 - 1000000000)::int4,
                   left(md5(i::text) || md5((i + 1)::text), 10 + (i %% 21)::int),
                   {C4_TYPES[c4]}
            FROM generate_series(1, %s::bigint) AS i""",
        (rows,),
    )
    cur.execute("VACUUM (FREEZE, ANALYZE) t_local")

    binary, csv = workdir / "t.bin", workdir / "t.csv"
    progress(f"writing {binary.name} (COPY binary) and {csv.name} (COPY csv)")
    cur.execute(f"COPY t_local TO '{binary}' (FORMAT binary)")
    cur.execute(f"COPY t_local TO '{csv}' (FORMAT csv)")

    cur.execute("CREATE EXTENSION file_fdw")
    cur.execute("CREATE SERVER csv_files FOREIGN DATA WRAPPER file_fdw")
    cur.execute(f"CREATE FOREIGN TABLE t_file ({columns}) SERVER csv_files "
                f"OPTIONS (filename '{csv}', format 'csv')")
    cur.execute("CREATE EXTENSION shoal")
    cur.execute("CREATE SERVER binary_files FOREIGN DATA WRAPPER shoal_fdw "
                "OPTIONS (wrapper 'binary_file.BinaryFile')")
    cur.execute(f"CREATE FOREIGN TABLE t_shoal ({columns}) SERVER binary_files "
                f"OPTIONS (filename '{binary}', chunk_bytes '{chunk_bytes}')")
    cur.execute("ANALYZE t_file")
    return {"binary": binary.stat().st_size, "csv": csv.stat().st_size}


def scan_output(cur: psycopg.Cursor[Any], table: str) -> list[str]:
    """The Output list of the query's scan node (EXPLAIN VERBOSE): the columns the scan decodes."""
    cur.execute("EXPLAIN (VERBOSE, FORMAT JSON) " + QUERY.format(table=table))
    plan = cur.fetchone()[0][0]["Plan"]
    stack = [plan]
    while stack:
        node = stack.pop()
        if node.get("Relation Name") == table:
            return list(node.get("Output", []))
        stack.extend(node.get("Plans", []))
    raise SystemExit(f"no scan of {table} in its plan:\n{json.dumps(plan, indent=2)}")


def check_plans_and_results(cur: psycopg.Cursor[Any], results: list[SystemResult]) -> None:
    """Every scan must decode all four columns, and every system must give the same answer."""
    answers = {}
    for res in results:
        res.output_columns = scan_output(cur, res.table)
        decoded = {col.rsplit(".", 1)[-1] for col in res.output_columns}
        progress(f"{res.table}: scan outputs {', '.join(res.output_columns)}")
        if not {"c1", "c2", "c3", "c4"} <= decoded:
            raise SystemExit(f"the scan of {res.table} does not decode every column: {res.output_columns}")
        cur.execute(QUERY.format(table=res.table))  # also the warm-up run
        answers[res.name] = cur.fetchone()
    first = next(iter(answers.values()))
    progress(f"answer: {first}")
    for name, answer in answers.items():
        if answer != first:
            raise SystemExit(f"{name} answered {answer}, expected {first}")


def time_query(cur: psycopg.Cursor[Any], table: str) -> float:
    start = time.perf_counter()
    cur.execute(QUERY.format(table=table))
    cur.fetchall()
    return time.perf_counter() - start


def summarise(results: list[SystemResult], rows: int) -> None:
    base = next(r for r in results if r.name == BASELINE)
    base_best, base_median = min(base.times), statistics.median(base.times)
    for res in results:
        res.best = min(res.times)
        res.median = statistics.median(res.times)
        res.rows_per_s = rows / res.best
        res.rows_per_s_median = rows / res.median
        res.ratio = base_best / res.best
        res.ratio_median = base_median / res.median


def markdown(results: list[SystemResult], meta: dict[str, Any]) -> str:
    lines = [
        f"Scanning {meta['rows']:,} rows (`{meta['columns']}`) with "
        f"`{QUERY.format(table='t')}`, best of {meta['repeat']} "
        f"(PostgreSQL {meta['server_version']}, {meta['cpu']}, chunks of {meta['chunk_bytes']:,} bytes):",
        "",
        "| system | best s | median s | rows/s (best) | vs file_fdw |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.best:.3f} | {r.median:.3f} | {r.rows_per_s:,.0f} | {r.ratio:.2f}x |")
    return "\n".join(lines) + "\n"




def write_results(results: list[SystemResult], meta: dict[str, Any], md: str, where: Path) -> Path:
    """Write the JSON and the Markdown; fall back to /tmp when the results folder is not writable."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {"meta": meta, "systems": [asdict(r) for r in results]}
    for folder in (where, Path(tempfile.gettempdir()) / "shoal-bench-results"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"fastpath-{stamp}.json").write_text(json.dumps(payload, indent=2) + "\n")
            (folder / f"fastpath-{stamp}.md").write_text(md)
            return folder / f"fastpath-{stamp}.json"
        except OSError as exc:
            progress(f"cannot write results to {folder}: {exc.strerror}")
    raise SystemExit("could not write the results anywhere")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/fastpath.py",
        description="Scan N rows through shoal_fdw's binary fast path, file_fdw and a local table.")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to scan (default 1000000)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed runs per system after one warm-up (default 5)")
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES,
                        help=f"bytes per chunk the handler yields (default {DEFAULT_CHUNK_BYTES})")
    parser.add_argument("--c4", choices=sorted(C4_TYPES), default="timestamptz",
                        help="type of the fourth column (default timestamptz)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the server's directory and the data files (the server is stopped)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help=f"where to write JSON and Markdown (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or args.chunk_bytes < 1:
        parser.error("--rows, --repeat and --chunk-bytes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when the fast path is at least as fast as file_fdw, else 1."""
    args = parse_args(argv)
    user = osuser.service_user()
    workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir="/tmp"))
    osuser.chown_to(workdir, user)
    python_path = handlers_dir(workdir, user)
    server = make_server(workdir, user, python_path)
    results = [SystemResult(name, table) for name, table in SYSTEMS]
    try:
        progress(f"starting PostgreSQL in {workdir} as OS user {user} (shoal.python_path={python_path})")
        server.init()
        server.start()
        with server.connect() as conn, conn.cursor() as cur:
            sizes = load(cur, workdir, args.rows, args.c4, args.chunk_bytes)
            progress(f"binary file {sizes['binary'] / 1e6:.1f} MB, CSV file {sizes['csv'] / 1e6:.1f} MB")
            check_plans_and_results(cur, results)
            for round_no in range(args.repeat):
                # Rotate who goes first so that no system always runs right after the same other one.
                order = results[round_no % len(results):] + results[:round_no % len(results)]
                timings = []
                for res in order:
                    elapsed = time_query(cur, res.table)
                    res.times.append(elapsed)
                    timings.append(f"{res.table} {elapsed:.3f}s")
                progress(f"round {round_no + 1}/{args.repeat}: " + ", ".join(timings))
            cur.execute("SHOW server_version")
            server_version = cur.fetchone()[0]
    finally:
        server.stop()
        if args.keep:
            progress(f"kept {workdir} (start it again with pg_ctl start -D {server.data})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    summarise(results, args.rows)
    meta = {
        "rows": args.rows,
        "repeat": args.repeat,
        "chunk_bytes": args.chunk_bytes,
        "columns": f"c1 int8, c2 int4, c3 text (10-30 chars), c4 {args.c4}",
        "query": QUERY.format(table="t"),
        "ratio": "file_fdw time / system time (above 1: faster than file_fdw)",
        "file_bytes": sizes,
        "server_version": server_version,
        "cpu": f"{cpu_model()} x{os.cpu_count()}",
        "kernel": platform.release(),
        "git": git_revision(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    md = markdown(results, meta)
    path = write_results(results, meta, md, args.results_dir)

    print()
    print(f"{'system':<30} {'best s':>8} {'median s':>9} {'rows/s':>12} {'vs file_fdw':>12}")
    for r in results:
        print(f"{r.name:<30} {r.best:8.3f} {r.median:9.3f} {r.rows_per_s:12,.0f} {r.ratio:11.2f}x")
    fast = next(r for r in results if r.name == FASTPATH)
    verdict = "met" if fast.ratio >= 1.0 else "NOT met"
    print(f"\nfast path / file_fdw = {fast.ratio:.2f} (best), {fast.ratio_median:.2f} (median): "
          f"goal ratio >= 1.0 {verdict}")
    print(f"results: {path} (and .md)\n")
    print(md)
    return 0 if fast.ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
