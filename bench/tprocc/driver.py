"""TPROC-C's driver: N virtual users, each a thread with its own connection, running HammerDB's mix of
transactions (each one a function call) back to back, without keying or thinking time, as HammerDB's
default timed test does.

The mix is HammerDB's: a number drawn in 1..23 picks new-order (1-10, 43.5%), payment (11-20, 43.5%),
delivery (21), stock-level (22) or order-status (23), 4.3% each.  Each virtual user keeps one home
warehouse (given out round-robin, so that every warehouse has users) and one stock-level district.
Parameters as HammerDB draws them: district and customer id uniform, 5-15 lines per order, payments of
1-5000 by last name 60% of the time, from a remote warehouse 15% of the time.

After a ramp-up, the measured interval gives HammerDB's two numbers: NOPM, new orders per minute, from
the sum of district.d_next_o_id at its start and end (only committed new orders move it), and TPM,
transactions per minute; HammerDB counts TPM from pg_stat_database on the server it drives, which on a
sharded system also counts the other nodes' share of each transaction, so TPM here is the transactions
the virtual users completed (committed or rolled back), and the server's count is reported beside it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

# A transaction running STATEMENT_TIMEOUT_S is stuck (a lock wait nobody will end): it is cancelled and
# counted as an error (SQLSTATE 57014) rather than freezing its virtual user.
from bench.pgbench import STATEMENT_TIMEOUT_S, percentile
from bench.tprocc.datagen import CUSTOMERS, DISTRICTS, NURAND_C_LAST, last_name, nurand

Progress = Callable[[str], None]
KINDS = ("neword", "payment", "delivery", "slev", "ostat")
ROLLBACK_SQLSTATE = "TP001"  # functions.sql: the new orders with an unused item
CALLS = {
    "neword": "SELECT neword(%s::integer, %s::integer, %s::integer, %s::integer, %s::integer)",
    "payment": "SELECT payment(%s::integer, %s::integer, %s::integer, %s::integer, %s::integer, "
               "%s::integer, %s::numeric, %s::varchar)",
    "delivery": "SELECT delivery(%s::integer, %s::integer)",
    "slev": "SELECT slev(%s::integer, %s::integer, %s::integer)",
    "ostat": "SELECT * FROM ostat(%s::integer, %s::integer, %s::integer, %s::integer, %s::varchar)",
}


def pick(rng: random.Random) -> str:
    """HammerDB's mix."""
    choice = rng.randint(1, 23)
    if choice <= 10:
        return "neword"
    if choice <= 20:
        return "payment"
    return ("delivery", "slev", "ostat")[choice - 21]


def parameters(kind: str, rng: random.Random, w_id: int, warehouses: int, slev_d_id: int) -> tuple[Any, ...]:
    """The arguments of one call of `kind` by a user whose home warehouse is `w_id`."""
    d_id = rng.randint(1, DISTRICTS)
    if kind == "neword":
        return (w_id, warehouses, d_id, rng.randint(1, CUSTOMERS), rng.randint(5, 15))
    if kind == "payment":
        c_w_id, c_d_id = w_id, d_id
        if rng.randint(1, 100) > 85 and warehouses > 1:  # a customer of another warehouse
            c_d_id = rng.randint(1, DISTRICTS)
            while c_w_id == w_id:
                c_w_id = rng.randint(1, warehouses)
        byname = 1 if rng.randint(1, 100) <= 60 else 0
        name = last_name(nurand(rng, 255, 0, 999, NURAND_C_LAST)) if byname else ""
        return (w_id, d_id, c_w_id, c_d_id, rng.randint(1, CUSTOMERS), byname,
                Decimal(rng.randint(100, 500000)) / 100, name)
    if kind == "delivery":
        return (w_id, rng.randint(1, 10))
    if kind == "slev":
        return (w_id, slev_d_id, rng.randint(10, 20))
    byname = 1 if rng.randint(1, 100) <= 60 else 0
    name = last_name(nurand(rng, 255, 0, 999, NURAND_C_LAST)) if byname else ""
    return (w_id, d_id, rng.randint(1, CUSTOMERS), byname, name)


@dataclass
class UserStats:
    """What one virtual user did while the measurement ran."""

    done: Counter[str] = field(default_factory=Counter)  # committed, per kind
    rolled_back: int = 0  # the 1% of new orders with an unused item
    errors: Counter[str] = field(default_factory=Counter)  # "kind SQLSTATE" -> count
    error_samples: dict[str, str] = field(default_factory=dict)
    latencies_us: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})


class VirtualUser(threading.Thread):
    def __init__(self, number: int, conninfo: str, w_id: int, warehouses: int, seed: int,
                 measuring: threading.Event, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"vu{number}")
        self.conninfo = conninfo
        self.w_id = w_id
        self.warehouses = warehouses
        self.rng = random.Random(seed)
        self.slev_d_id = self.rng.randint(1, DISTRICTS)
        self.measuring = measuring
        self.stop = stop
        self.stats = UserStats()
        self.fatal: str | None = None

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        failures_in_a_row = 0
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True,
                                           options=f"-c statement_timeout={STATEMENT_TIMEOUT_S}s")
                kind = pick(self.rng)
                args = parameters(kind, self.rng, self.w_id, self.warehouses, self.slev_d_id)
                start = time.perf_counter()
                try:
                    conn.execute(CALLS[kind], args).fetchall()
                    ok = True
                except psycopg.errors.Error as exc:
                    ok = False
                    if isinstance(exc, psycopg.OperationalError) and conn.closed:
                        raise
                    self._error(kind, exc)
                elapsed = int((time.perf_counter() - start) * 1e6)
                if ok and self.measuring.is_set():
                    self.stats.done[kind] += 1
                    self.stats.latencies_us[kind].append(elapsed)
                failures_in_a_row = 0
            except psycopg.OperationalError as exc:  # connection lost: note it, reconnect
                failures_in_a_row += 1
                self._error("connect", exc)
                if conn is not None:
                    conn.close()
                conn = None
                if failures_in_a_row >= 20:
                    self.fatal = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    return
                time.sleep(0.2)
        if conn is not None:
            conn.close()

    def _error(self, kind: str, exc: Exception) -> None:
        sqlstate = getattr(getattr(exc, "diag", None), "sqlstate", None) or type(exc).__name__
        if sqlstate == ROLLBACK_SQLSTATE:
            if self.measuring.is_set():
                self.stats.rolled_back += 1
            return
        if self.measuring.is_set():
            key = f"{kind} {sqlstate}"
            self.stats.errors[key] += 1
            self.stats.error_samples.setdefault(key, (str(exc).strip().splitlines() or ["?"])[0][:300])


def _sum_next_o_id(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT sum(d_next_o_id) FROM district").fetchone()[0])


def _server_transactions(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database").fetchone()[0])


def run(conninfo: str, vus: int, warehouses: int, rampup_s: float, duration_s: float,
        progress: Progress, label: str = "") -> dict[str, Any]:
    """Drive `vus` virtual users against the database at `conninfo`; returns NOPM, TPM and details."""
    measuring, stop = threading.Event(), threading.Event()
    users = [VirtualUser(i, conninfo, 1 + i % warehouses, warehouses, seed=1000 + i, measuring=measuring,
                         stop=stop) for i in range(vus)]
    with psycopg.connect(conninfo, autocommit=True) as monitor:
        for user in users:
            user.start()
        try:
            progress(f"{label}tprocc: {vus} virtual users on {warehouses} warehouses, "
                     f"ramp-up {rampup_s:.0f}s")
            time.sleep(rampup_s)
            orders0, server0 = _sum_next_o_id(monitor), _server_transactions(monitor)
            measuring.set()
            t0 = time.monotonic()
            progress(f"{label}tprocc: measuring for {duration_s:.0f}s")
            deadline = t0 + duration_s
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, 10.0))
                if left > 10.0:
                    done = sum(sum(u.stats.done.values()) for u in users)
                    progress(f"{label}tprocc: {time.monotonic() - t0:.0f}s, {done:,} transactions so far")
            measuring.clear()
            elapsed = time.monotonic() - t0
            orders1, server1 = _sum_next_o_id(monitor), _server_transactions(monitor)
        finally:
            stop.set()
            for user in users:
                user.join(timeout=STATEMENT_TIMEOUT_S + 30)
    minutes = elapsed / 60
    done: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    latencies: dict[str, list[int]] = {k: [] for k in KINDS}
    rolled_back = 0
    for user in users:
        done.update(user.stats.done)
        errors.update(user.stats.errors)
        rolled_back += user.stats.rolled_back
        for key, text in user.stats.error_samples.items():
            samples.setdefault(key, text)
        for kind in KINDS:
            latencies[kind].extend(user.stats.latencies_us[kind])
    completed = sum(done.values()) + rolled_back
    return {
        "vus": vus, "warehouses": warehouses, "rampup_s": rampup_s, "seconds": round(elapsed, 1),
        "nopm": round((orders1 - orders0) / minutes),
        "tpm": round(completed / minutes),
        "tpm_server": round((server1 - server0) / minutes),
        "new_orders": orders1 - orders0,
        "committed": dict(done), "rolled_back": rolled_back,
        "errors": dict(errors), "error_samples": samples,
        "mix": {k: round(done[k] / max(1, sum(done.values())), 3) for k in KINDS},
        "latency_ms": {k: {"avg": round(sum(v) / len(v) / 1000, 3) if v else None,
                           "p50": round(percentile(v, 50) / 1000, 3),
                           "p99": round(percentile(v, 99) / 1000, 3)} for k, v in latencies.items()},
        "fatal": [u.fatal for u in users if u.fatal],
        "stuck_users": sum(1 for u in users if u.is_alive()),
    }
