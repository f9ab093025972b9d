"""The benchmarks' one entry point (``make bench``, ``shoal bench``, ``python -m bench.run``).

    python -m bench.run [pgbench|tprocc|transport|all] [--quick] [--clients 1,8,64] [--duration S]
                        [--warehouses W] [--vus N] [--results DIR] [--systems postgresql,postgres_fdw,shoal]

pgbench and TPROC-C run on the three systems of bench/systems.py, started side by side for the run and
stopped at its end (also on failure or Ctrl-C); transport runs bench/transport.py on its own cluster.
Results go to DIR (default bench/results/): ``bench-<time>.json``, ``bench-<time>.md`` and PNG plots.
Run it as root (the servers then run as the ``postgres`` OS user, like ``shoal up``) or as a user who may
run PostgreSQL.  Exit status 1 when a system could not run or a consistency check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import pgbench_suite, plots, summary, systems, transport_suite
from bench.report import REPO, cpu_model, git_revision, positive_ints, progress
from bench.tprocc import suite as tprocc_suite

WHAT = ("pgbench", "tprocc", "transport", "all")
QUICK = {"duration": 5, "tprocc_duration": 30, "scale": 10, "warmup": 1, "warehouses": 4, "vus": 4,
         "rampup": 5}
FULL = {"duration": 30, "tprocc_duration": 120, "scale": 20, "warmup": 5, "warehouses": 4, "vus": 8,
        "rampup": 30}


def _systems(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in systems.SYSTEM_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"systems are {', '.join(systems.SYSTEM_NAMES)}; not {text!r}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="pgbench and TPROC-C on plain PostgreSQL, postgres_fdw and shoal side by side, and "
                    "shoal's transport benchmark; results as JSON, Markdown and PNG plots.")
    p.add_argument("what", nargs="?", choices=WHAT, default="all", help="which benchmark (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes and short runs (a few minutes in all): what make bench runs")
    p.add_argument("--clients", type=positive_ints, default=[1, 8, 64],
                   help="pgbench client counts (default 1,8,64)")
    p.add_argument("--duration", type=int, help="seconds of each pgbench run and of the TPROC-C test "
                   f"(default {QUICK['duration']}/{QUICK['tprocc_duration']} quick, "
                   f"{FULL['duration']}/{FULL['tprocc_duration']} otherwise)")
    p.add_argument("--scale", type=int,
                   help=f"pgbench scale (default {QUICK['scale']} quick, {FULL['scale']})")
    p.add_argument("--warehouses", type=int, help=f"TPROC-C warehouses (default {FULL['warehouses']})")
    p.add_argument("--vus", type=int,
                   help=f"TPROC-C virtual users (default {QUICK['vus']} quick, {FULL['vus']})")
    p.add_argument("--rampup", type=int, help="TPROC-C ramp-up seconds before measuring "
                   f"(default {QUICK['rampup']} quick, {FULL['rampup']})")
    p.add_argument("--partitions", type=int, default=4,
                   help="partitions per sharded table, half on each node (default 4)")
    p.add_argument("--systems", type=_systems, default=list(systems.SYSTEM_NAMES),
                   help="comma-separated systems to compare (default: all three)")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results",
                   help="where to write the results (default bench/results)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the servers' work directory in /tmp")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name in ("scale", "warehouses", "vus", "rampup"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    args.tprocc_duration = args.duration or defaults["tprocc_duration"]
    args.pgbench_duration = args.duration or defaults["duration"]
    args.warmup = defaults["warmup"]
    sizes = (args.scale, args.warehouses, args.vus, args.partitions, args.pgbench_duration)
    if min(sizes) < 1 or args.rampup < 0:
        p.error("sizes and durations must be positive")
    return args


def _meta(argv: list[str]) -> dict[str, Any]:
    return {
        "command": "python -m bench.run " + shlex.join(argv),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu_model(), "nproc": os.cpu_count(), "kernel": platform.release(), "git": git_revision(),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "tuning": systems.TUNING, "tuning_note": systems.TUNING_NOTE,
    }


def _write(results_dir: Path, stamp: str, meta: dict[str, Any], described: dict[str, Any],
           results: dict[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    title = f"shoal bench {meta['when']} ({meta['nproc']} CPUs, {meta['cpu']})"
    made: dict[str, str] = {}
    try:
        if "pgbench" in results:
            png = plots.pgbench(results["pgbench"], results_dir / f"bench-{stamp}-pgbench.png", title)
            if png:
                made["pgbench"] = png.name
        if "tprocc" in results:
            png = plots.tprocc(results["tprocc"], results_dir / f"bench-{stamp}-tprocc.png", title)
            if png:
                made["tprocc"] = png.name
    except ImportError as exc:
        progress(f"no plots: {exc} (make install puts matplotlib into the venv)")
    md = summary.markdown(meta, described, results, made)
    base = results_dir / f"bench-{stamp}"
    base.with_suffix(".json").write_text(json.dumps({"meta": meta, "systems": described, **results,
                                                     "plots": made}, indent=2, default=str) + "\n")
    base.with_suffix(".md").write_text(md)
    return base


def _failed(described: dict[str, Any], results: dict[str, Any]) -> list[str]:
    bad = [f"{name}: {s['error']}" for name, s in described.items() if "error" in s]
    for name, e in results.get("tprocc", {}).get("systems", {}).items():
        if "error" in e:
            bad.append(f"tprocc {name}: {e['error']}")
        elif not e.get("checks", {}).get("passed"):
            bad.append(f"tprocc {name}: consistency checks failed")
    for name, load in results.get("pgbench", {}).get("load", {}).items():
        if "error" in load:
            bad.append(f"pgbench {name}: {load['error']}")
    bad += [f"pgbench {r['system']} {r['workload']} {r['protocol']} {r['clients']}: failed"
            for r in results.get("pgbench", {}).get("runs", []) if "error" in r]
    if "error" in results.get("transport", {}):
        bad.append(f"transport: {results['transport']['error']}")
    return bad


def _interrupt(signum: int, _frame: Any) -> None:
    """SIGTERM (e.g. from `timeout`) ends the run like Ctrl-C does: the servers are stopped."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    meta = _meta(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = systems.make_workdir()
    results: dict[str, Any] = {}
    described: dict[str, Any] = {}
    interrupted = False
    progress(f"bench: {args.what}{' (quick)' if args.quick else ''}; work directory {workdir}; "
             f"{systems.TUNING_NOTE}")
    try:
        if args.what in ("pgbench", "tprocc", "all"):
            with systems.running(args.systems, workdir, progress) as started:
                ready = [s for s in started.values() if isinstance(s, systems.System)]
                for name, s in started.items():
                    described[name] = s.describe() if isinstance(s, systems.System) else {
                        "error": f"{type(s).__name__}: {s}"}
                if ready:
                    with ready[0].connect() as conn:
                        meta["server_version"] = conn.execute("SHOW server_version").fetchone()[0]
                if args.what in ("pgbench", "all") and ready:
                    progress("--- pgbench ---")
                    opts = pgbench_suite.Options(scale=args.scale, clients=args.clients,
                                                 seconds=args.pgbench_duration, partitions=args.partitions,
                                                 warmup=args.warmup)
                    results["pgbench"] = pgbench_suite.run(ready, opts, workdir, progress)
                if args.what in ("tprocc", "all") and ready:
                    progress("--- TPROC-C ---")
                    topts = tprocc_suite.Options(warehouses=args.warehouses, vus=args.vus, rampup=args.rampup,
                                                 seconds=args.tprocc_duration, partitions=args.partitions)
                    results["tprocc"] = tprocc_suite.run(ready, topts, workdir, progress)
                for s in ready:  # placements learnt while distributing
                    described[s.name] = s.describe()
        if args.what in ("transport", "all"):
            progress("--- transport ---")
            results["transport"] = transport_suite.run(workdir, args.results.resolve(), args.quick,
                                                       args.duration, args.clients, progress)
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: servers stopped; writing what was measured")
    finally:
        if args.keep_workdir:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    meta.setdefault("server_version", results.get("transport", {}).get("meta", {}).get("server_version", "?"))
    base = _write(args.results, stamp, meta, described, results)
    print()
    print(base.with_suffix(".md").read_text())
    progress(f"results: {base}.json, {base}.md and the PNG plots beside them")
    failed = _failed(described, results)
    for line in failed:
        progress(f"FAILED: {line}")
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
