"""TPROC-C on every system of a run: generate the data once, load it into each system, then for each
system a ramp-up, a timed test and the consistency checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backends import BackendSampler, summary
from bench.systems import System
from bench.tprocc import checks, datagen, driver, loader

Progress = Callable[[str], None]


@dataclass
class Options:
    warehouses: int
    vus: int
    rampup: int
    seconds: int
    partitions: int


def run(systems: list[System], opts: Options, workdir: Path, progress: Progress) -> dict[str, Any]:
    """Load and drive every system; returns the results (JSON-ready)."""
    files = datagen.generate(workdir / "tprocc-data", opts.warehouses, progress)
    results: dict[str, Any] = {}
    try:
        for system in systems:
            entry: dict[str, Any] = {}
            results[system.name] = entry
            try:
                entry["load"] = loader.load(system, files, opts.partitions, progress)
            except Exception as exc:  # the other systems still run
                entry["error"] = f"load: {type(exc).__name__}: {exc}"
                progress(f"{system.name}: tprocc load FAILED: {type(exc).__name__}: {exc}")
                continue
            with system.connect() as conn:
                entry["checks_before"] = checks.run(conn)
            try:
                with contextlib.ExitStack() as stack:
                    peers = {n.name: n.conninfo for n in system.nodes[1:]}
                    sampler = stack.enter_context(BackendSampler(peers)) if peers else None
                    entry["run"] = driver.run(system.coordinator.conninfo, opts.vus, opts.warehouses,
                                              opts.rampup, opts.seconds, progress, label=f"{system.name}: ")
                if sampler is not None:
                    entry["run"]["peer_backends"] = {n: summary(m) for n, m in sampler.most.items()}
                if entry["run"]["stuck_users"]:
                    progress(f"{system.name}: {entry['run']['stuck_users']} virtual users did not stop: "
                             f"ending their sessions")
                    system.terminate_sessions()
            except Exception as exc:
                entry["error"] = f"run: {type(exc).__name__}: {exc}"
                progress(f"{system.name}: tprocc run FAILED: {type(exc).__name__}: {exc}")
                system.terminate_sessions()
            with system.connect() as conn:
                entry["checks"] = checks.run(conn)
            progress(summary_line(system.name, entry))
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)
    return {"options": vars(opts), "systems": results}


def summary_line(name: str, entry: dict[str, Any]) -> str:
    run = entry.get("run")
    verdict = "checks passed" if entry.get("checks", {}).get("passed") else "CHECKS FAILED"
    if run is None:
        return f"{name}: tprocc {entry.get('error', 'no run')}; {verdict}"
    errors = sum(run["errors"].values())
    return (f"{name}: tprocc NOPM {run['nopm']:,}  TPM {run['tpm']:,}  ({run['new_orders']:,} new orders in "
            f"{run['seconds']}s, {run['rolled_back']} rolled back, {errors} errors); {verdict}")
