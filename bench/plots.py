"""PNG plots of a benchmark run (matplotlib, no display needed): pgbench throughput against client count
for each system, one panel per workload and protocol, and TPROC-C's NOPM per system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"postgresql": "#4C72B0", "postgres_fdw": "#DD8452", "shoal": "#55A868",
          "shoal (no cut)": "#8172B3", "shoal (1PC)": "#937860"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pgbench(results: dict[str, Any], path: Path, title: str) -> Path | None:
    """tps against clients, a line per system, a panel per (workload, protocol); None without runs."""
    runs = [r for r in results.get("runs", []) if "tps" in r]
    if not runs:
        return None
    plt = _pyplot()
    cells = sorted({(r["workload"], r["protocol"]) for r in runs},
                   key=lambda c: (c[0] != "select-only", c[1]))
    names = sorted({r["system"] for r in runs}, key=lambda s: list(COLORS).index(s) if s in COLORS else 9)
    cols = 2
    rows = (len(cells) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    for ax, (workload, protocol) in zip(axes.flat, cells, strict=False):
        for system in names:
            points = sorted((r["clients"], r["tps"]) for r in runs
                            if (r["system"], r["workload"], r["protocol"]) == (system, workload, protocol))
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=system, color=COLORS.get(system))
        ax.set_xscale("log", base=2)
        clients = sorted({r["clients"] for r in runs})
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_xlabel("clients")
        ax.set_ylabel("transactions/s")
        ax.set_ylim(bottom=0)
        ax.set_title(f"pgbench {workload}, -M {protocol}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tprocc(results: dict[str, Any], path: Path, title: str) -> Path | None:
    """NOPM per system as bars (checks that failed are marked); None without runs."""
    systems = [(name, e["run"]["nopm"], e.get("checks", {}).get("passed", False))
               for name, e in results.get("systems", {}).items() if "run" in e]
    if not systems:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = [s for s, _, _ in systems]
    bars = ax.bar(names, [n for _, n, _ in systems], color=[COLORS.get(s, "#888888") for s in names])
    for bar, (_, nopm, passed) in zip(bars, systems, strict=True):
        label = f"{nopm:,}" + ("" if passed else "\nchecks FAILED")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, nopm), ha="center", va="bottom", fontsize=9)
    opts = results.get("options", {})
    ax.set_ylabel("NOPM (new orders per minute)")
    ax.set_title(f"TPROC-C, {opts.get('warehouses')} warehouses, {opts.get('vus')} virtual users")
    ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
