"""The Markdown report of a benchmark run (bench/run.py): the machine and settings, the systems, then one
table per workload with every system side by side and the ratios between them."""

from __future__ import annotations

from typing import Any

from bench.pgbench import STATEMENT_TIMEOUT_S
from bench.systems import TUNING, TUNING_NOTE


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", rule] + [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


PAIRS = (("shoal", "postgres_fdw"), ("shoal", "postgresql"), ("postgres_fdw", "postgresql"),
         ("shoal", "shoal (no cut)"), ("shoal (no cut)", "shoal (1PC)"))


def _ratios(values: dict[str, float | None]) -> str:
    """"shoal/postgres_fdw 1.23x, ..." for the pairs of systems that both have a value."""
    return ", ".join(f"{a}/{b} {_ratio(values.get(a), values.get(b))}" for a, b in PAIRS
                     if values.get(a) and values.get(b)) or "-"


def header(meta: dict[str, Any], systems: dict[str, Any]) -> list[str]:
    out = [f"# shoal benchmarks, {meta['when']}", "", f"`{meta['command']}`", "",
           f"Machine: {meta['cpu']}, {meta['nproc']} CPUs, kernel {meta['kernel']}, load average "
           f"{meta['loadavg_start']} at the start and {meta.get('loadavg_end', '?')} at the end (the machine "
           f"is shared: compare systems within this run, not with other runs). PostgreSQL "
           f"{meta.get('server_version', '?')}; shoal {meta['git']}.", ""]
    if not systems:
        return out
    out += ["Every node of every system runs with the same settings: "
            + ", ".join(f"`{k} = {v}`" for k, v in TUNING.items()) + f". Note: {TUNING_NOTE}. "
            f"Statements are cancelled after {STATEMENT_TIMEOUT_S} s (a stuck transaction fails its run "
            "instead of hanging the benchmark).", "", "## Systems", ""]
    rows = []
    for name, s in systems.items():
        if "error" in s:
            rows.append([name, "NOT AVAILABLE", s["error"]])
            continue
        nodes = ", ".join(f"{n['name']} :{n['port']}" for n in s["nodes"])
        rows.append([name, nodes, "; ".join(s.get("notes", []))])
    out += _table(["system", "nodes", "notes"], rows, "lll") + [""]
    return out


def pgbench(results: dict[str, Any]) -> list[str]:
    opts = results["options"]
    out = [f"## pgbench (scale {opts['scale']}, {opts['seconds']} s per run, {opts['partitions']} partitions "
           f"per table on the sharded systems, `--max-tries {results['max_tries']}`)", "",
           "Clients connect to the first node. p50/p99 from pgbench's per-transaction log. *peer backends*: "
           "the most server processes seen at once on the second node during the run (client backends + "
           "shoal workers). After a failed run, the system's later runs of the same workload are skipped "
           "(what broke it, such as a stuck transaction holding locks, usually outlives the run).", ""]
    for name, load in results["load"].items():
        if "error" in load:
            out += [f"- {name}: load FAILED: {load['error']}"]
    runs = results["runs"]
    systems = list(dict.fromkeys(r["system"] for r in runs))
    cells = list(dict.fromkeys((r["workload"], r["protocol"]) for r in runs))
    for workload, protocol in cells:
        out += ["", f"### {workload}, -M {protocol}", ""]
        rows = []
        for clients in sorted({r["clients"] for r in runs}):
            by = {r["system"]: r for r in runs if (r["workload"], r["protocol"], r["clients"]) ==
                  (workload, protocol, clients)}
            for system in systems:
                r = by.get(system)
                if r is None:
                    continue
                if "error" in r:
                    rows.append([str(clients), system, "skipped" if r.get("skipped") else "FAILED",
                                 r["error"].split(" (command: ")[0][:200], "", "", "", ""])
                    continue
                peer = ", ".join(f"{b['client_backends']} + {b['shoal_workers']}"
                                 for b in r.get("peer_backends", {}).values()) or "-"
                fails = f"{r['failed']:,} / {r['retried']:,}" if r.get("failed") or r.get("retried") else ""
                rows.append([str(clients), system, f"**{_num(r['tps'])}**", _num(r["latency_ms"], 3),
                             _num(r.get("latency_p50_ms"), 3), _num(r.get("latency_p99_ms"), 3), fails, peer])
        out += _table(["clients", "system", "tps", "avg ms", "p50 ms", "p99 ms", "failed / retried",
                       "peer backends"], rows, "rlrrrrrr")
        ratios = []
        for clients in sorted({r["clients"] for r in runs}):
            tps = {r["system"]: r.get("tps") for r in runs
                   if (r["workload"], r["protocol"], r["clients"]) == (workload, protocol, clients)}
            ratios.append(f"{clients} clients: {_ratios(tps)}")
        out += ["", "Ratios of tps: " + "; ".join(ratios) + "."]
    return out + [""]


def tprocc(results: dict[str, Any]) -> list[str]:
    opts = results["options"]
    out = [f"## TPROC-C ({opts['warehouses']} warehouses, {opts['vus']} virtual users, {opts['rampup']} s "
           f"ramp-up, {opts['seconds']} s measured, {opts['partitions']} partitions per table on the sharded "
           f"systems)", "",
           "HammerDB's mix as server-side functions, no keying or thinking time; the virtual users connect "
           "to the first node. NOPM from district.d_next_o_id; TPM counts the transactions the users "
           "completed (HammerDB's server-side count, from pg_stat_database on the first node, in the next "
           "column). Rolled back: the 1% of new orders with an unused item.", ""]
    rows = []
    for name, e in results["systems"].items():
        run = e.get("run")
        verdict = "pass" if e.get("checks", {}).get("passed") else "**FAIL**"
        if run is None:
            rows.append([name, "FAILED", e.get("error", "")[:200], "", "", "", "", "", verdict, "", ""])
            continue
        lat = run["latency_ms"]
        homes = e["load"]["warehouse_nodes"]
        by_node: dict[str, int] = {}
        for node in homes.values():
            by_node[node] = by_node.get(node, 0) + 1
        rows.append([name, f"**{_num(run['nopm'])}**", _num(run["tpm"]), _num(run["tpm_server"]),
                     str(run["rolled_back"]), str(sum(run["errors"].values())),
                     _num(lat["neword"]["p99"], 1), _num(lat["payment"]["p99"], 1), verdict,
                     ", ".join(f"{n}: {c}" for n, c in sorted(by_node.items())),
                     ", ".join(f"{b['client_backends']} + {b['shoal_workers']}"
                               for b in run.get("peer_backends", {}).values()) or "-"])
    out += _table(["system", "NOPM", "TPM", "TPM (server)", "rolled back", "errors", "new-order p99 ms",
                   "payment p99 ms", "consistency", "warehouses per node", "peer backends"], rows,
                  "lrrrrrrrllr")
    nopm = {n: e["run"]["nopm"] for n, e in results["systems"].items() if "run" in e}
    out += ["", f"NOPM ratios: {_ratios(nopm)}.", ""]
    names = list(results["systems"])
    checks = next((e["checks"]["checks"] for e in results["systems"].values() if "checks" in e), {})
    rows = []
    for check in checks:
        cells = []
        for name in names:
            c = results["systems"][name].get("checks", {}).get("checks", {}).get(check)
            cells.append("-" if c is None else c.get("error", "")[:60] or
                         ("ok" if c["violations"] == 0 else f"**{c['violations']} violations**"))
        rows.append([f"{check}: {checks[check]['what']}", *cells])
    if rows:
        out += ["Consistency checks after the run (HammerDB's; violations counted per warehouse or "
                "district):", ""] + _table(["check", *names], rows, "l" + "l" * len(names))
    errors = {n: e["run"]["error_samples"] for n, e in results["systems"].items()
              if "run" in e and e["run"]["error_samples"]}
    if errors:
        out += ["", "Errors seen (kind SQLSTATE: count, first message):", ""]
        for name, samples in errors.items():
            counts = results["systems"][name]["run"]["errors"]
            out += [f"- {name}: " + "; ".join(f"{k}: {counts[k]} ({v})" for k, v in samples.items())]
    return out + [""]


def transport(results: dict[str, Any]) -> list[str]:
    out = ["## Transport (bench/transport.py)", ""]
    if "error" in results:
        return out + [f"FAILED: {results['error']}", ""]
    out += [f"`{results['command']}`; full report: `{results.get('markdown', '?')}`", ""]
    parts = results.get("parts", {})
    ping = parts.get("ping", {}).get("best_remote")
    if ping:
        out.append(f"- pings between the multiplexers: {ping['rate_per_s']:,}/s ({ping['window']} in flight)")
    for r in parts.get("point", {}).get("ratios", []):
        out.append(f"- remote point query, {r['clients']} clients: "
                   f"shoal/postgres_fdw {r['shoal_vs_pgfdw']:.2f}x")
    bulk = parts.get("bulk", {}).get("ratios")
    if bulk:
        out.append(f"- bulk read: shoal/postgres_fdw (fetch_size 10000) {bulk['shoal_vs_pgfdw_10000']:.2f}x")
    failed = [f"{n}: {p['error']}" for n, p in parts.items() if "error" in p]
    out += [f"- part {f}" for f in failed]
    return out + [""]


def markdown(meta: dict[str, Any], systems: dict[str, Any], results: dict[str, Any],
             plots: dict[str, str]) -> str:
    out = header(meta, systems)
    if "pgbench" in results:
        out += pgbench(results["pgbench"])
        if "pgbench" in plots:
            out += [f"![pgbench throughput against clients]({plots['pgbench']})", ""]
    if "tprocc" in results:
        out += tprocc(results["tprocc"])
        if "tprocc" in plots:
            out += [f"![TPROC-C NOPM]({plots['tprocc']})", ""]
    if "transport" in results:
        out += transport(results["transport"])
    return "\n".join(out).rstrip() + "\n"
