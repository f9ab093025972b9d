"""The `shoal` command line: `shoal up / down / status / destroy` for a local cluster, and `shoal bench`.

Connection strings (the output scripts want) go to stdout; progress, notes and errors go to stderr.
Errors are one line plus a hint; SHOAL_DEBUG=1 shows the traceback as well.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shoal import __version__
from shoal.cluster import DEFAULT_NODES, DEFAULT_PORT, Cluster, ClusterStatus, ResultTable
from shoal.errors import ShoalError

DEFAULT_DIR = "./shoal-cluster"


def _progress(message: str) -> None:
    print(f"shoal: {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal",
        description="Run a local shoal cluster: PostgreSQL 15 nodes with the shoal extension, "
                    "joined into one sharded database.")
    parser.add_argument("--version", action="version", version=f"shoal {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--dir", default=DEFAULT_DIR,
                       help=f"cluster directory (default: {DEFAULT_DIR})")
        return p

    up = with_dir(commands.add_parser(
        "up", help="create (if absent) and start the cluster; print a connection string per node",
        description="Create (if absent) and start N nodes on 127.0.0.1, ports P..P+N-1, with the shoal "
                    "extension preloaded and every node registered on every node. Prints one libpq "
                    "connection string per node. Safe to repeat: a running cluster is left as it is, "
                    "a stopped one is started, a larger --nodes adds nodes."))
    up.add_argument("--nodes", type=int, default=None, metavar="N",
                    help=f"number of nodes (default: {DEFAULT_NODES}, or the existing cluster's)")
    up.add_argument("--port", type=int, default=None, metavar="P",
                    help=f"port of the first node (default: {DEFAULT_PORT}, or the existing cluster's)")
    with_dir(commands.add_parser("down", help="stop every node of the cluster"))
    with_dir(commands.add_parser("status", help="show nodes, partitions per node and multiplexers"))
    with_dir(commands.add_parser("destroy", help="stop every node and delete the cluster"))
    bench = commands.add_parser("bench", add_help=False,
                                help="run the benchmarks (python -m bench.run in a shoal clone; "
                                     "`shoal bench --help` lists its options)")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _bench(args: Sequence[str]) -> int:
    """`shoal bench ARGS`: `python -m bench.run ARGS` in the shoal clone around the current directory
    (the benchmarks are not part of the installed package)."""
    here = Path.cwd()
    for root in (here, *here.parents):
        if (root / "bench" / "run.py").is_file():
            try:
                return subprocess.call([sys.executable, "-m", "bench.run", *args], cwd=root)
            except KeyboardInterrupt:
                return 130
    print("shoal: error: no shoal clone (bench/run.py) in the current directory or above it", file=sys.stderr)
    print("hint: run `shoal bench` (or `make bench`) from the shoal repository", file=sys.stderr)
    return 1


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _print_table(table: ResultTable, indent: str = "  ") -> None:
    cells = [[c.upper() for c in table.columns]] + [[_cell(v) for v in row] for row in table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
    for row in cells:
        print(indent + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _print_status(status: ClusterStatus) -> None:
    running = sum(1 for st in status.nodes if st.pid is not None or st.accepting)
    print(f"cluster {status.directory}: {running} of {len(status.nodes)} nodes running "
          f"(servers run as OS user {status.service_user!r})")
    nodes = ResultTable(
        ["node", "state", "port", "pid", "members", "conninfo"],
        [(st.node.name,
          "up" if st.accepting else ("starting" if st.pid is not None else "down"),
          st.node.port, st.pid, st.members, st.node.conninfo) for st in status.nodes])
    _print_table(nodes)
    if status.partitions is not None:
        print("partitions per node:")
        if status.partitions.rows:
            _print_table(status.partitions)
        else:
            print("  (no distributed tables yet)")
    if status.multiplexers is not None:
        print("multiplexers:")
        if status.multiplexers.rows:
            _print_table(status.multiplexers)
        else:
            print("  (no statistics yet)")
    for note in status.notes:
        print(f"note: {note}")


def _run(args: argparse.Namespace) -> int:
    cluster = Cluster(args.dir)
    if args.command == "up":
        nodes = cluster.up(nodes=args.nodes, port=args.port, progress=_progress)
        _progress(f"{len(nodes)} nodes up in {cluster.directory}; connect with psql \"<string>\":")
        for node in nodes:
            print(node.conninfo, flush=True)
    elif args.command == "down":
        cluster.down(progress=_progress)
        _progress(f"cluster in {cluster.directory} stopped")
    elif args.command == "status":
        _print_status(cluster.status())
    elif args.command == "destroy":
        if cluster.destroy(progress=_progress):
            _progress(f"cluster in {cluster.directory} destroyed")
        else:
            _progress(f"no cluster in {cluster.directory}: nothing to destroy")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `shoal` command (and of `python -m shoal`). Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # every argument after it is bench.run's, --help included
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    debug = os.environ.get("SHOAL_DEBUG", "") not in ("", "0")
    try:
        return _run(args)
    except ShoalError as exc:
        if debug:
            traceback.print_exc()
        print(f"shoal: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("shoal: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything unforeseen still gets one line, not a traceback
        if debug:
            traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"shoal: error: {type(exc).__name__}: {first}", file=sys.stderr)
        print("hint: run again with SHOAL_DEBUG=1 to see the traceback", file=sys.stderr)
        return 1
