"""CPU time of processes from /proc, for the benchmarks (Linux only).

``ProcessTree`` watches the children of one or more postmasters (the node's multiplexer, its
workers, its client backends...) over a measured interval and tells how much CPU each kind of
process used.  Processes that start and exit inside the interval are counted exactly: the
postmaster reaps its children, so their whole CPU time lands in its ``cutime + cstime``; polling
``/proc`` every ``interval`` seconds only tells which kind of process that time belonged to.

``MachineLoad`` tells how busy the machine was with work that is not ours (other engineers'
tests): busy time from ``/proc/stat`` minus the CPU time of the processes we know.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")

# The auxiliary processes of a PostgreSQL server (their titles contain these words).
AUXILIARY = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical replication",
             "archiver", "startup", "walreceiver", "walsender", "stats")


@dataclass(frozen=True)
class Stat:
    ppid: int
    ticks: int  # utime + stime, in clock ticks
    child_ticks: int  # cutime + cstime: the children it has reaped


def read_stat(pid: int) -> Stat | None:
    """A process's CPU times; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command (field 2) is in parentheses and may contain anything: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2:].split()
    # rest[0] is field 3 (state); utime, stime, cutime, cstime are fields 14..17.
    return Stat(int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14]))


def title(pid: int) -> str:
    """A process's title (PostgreSQL rewrites it: "postgres: shoal-n1: shoal worker 0")."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children_of(ppids: set[int]) -> dict[int, Stat]:
    """The live children of the given processes, with their CPU times."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = read_stat(int(entry))
        if stat is not None and stat.ppid in ppids:
            found[int(entry)] = stat
    return found


def kind_of(process_title: str) -> str | None:
    """The kind of a postmaster's child from its title; None while it still has the postmaster's
    (a backend that has just been forked)."""
    if not process_title.startswith("postgres:"):
        return None
    if "shoal multiplexer" in process_title:
        return "multiplexer"
    if "shoal worker" in process_title:
        return "workers"
    if any(word in process_title for word in AUXILIARY):
        return "other server processes"
    return "client backends"


def pids_of_kind(postmaster: int, kind: str) -> list[int]:
    return sorted(pid for pid in children_of({postmaster}) if kind_of(title(pid)) == kind)


def own_ticks() -> int:
    """CPU time of this process and of the children it has reaped, in clock ticks."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return round(total * CLK_TCK)


def tree_ticks(postmasters: list[int]) -> int:
    """CPU time of the postmasters, their live children and the children they have reaped."""
    total = 0
    for pid in postmasters:
        stat = read_stat(pid)
        if stat is not None:
            total += stat.ticks + stat.child_ticks
    for stat in children_of(set(postmasters)).values():
        total += stat.ticks + stat.child_ticks
    return total


class ProcessTree:
    """CPU time per (node, kind of process) of the postmasters' children over an interval.

    ``start()``, run the workload, ``stop()``.  Before start, no short-lived process (a client
    backend about to exit) should be running: its earlier CPU time would be counted too.
    """

    def __init__(self, postmasters: dict[str, int], interval: float = 0.2) -> None:
        self.postmasters = postmasters
        self.interval = interval
        self._node_of = {pm: node for node, pm in postmasters.items()}
        self._base: dict[int, int] = {}  # pid -> ticks at start
        self._last: dict[int, int] = {}  # pid -> ticks when last seen
        self._kind: dict[int, str | None] = {}
        self._owner: dict[int, str] = {}  # pid -> node
        self._reaped_base: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.exited_seen: dict[str, int] = {}  # ticks polling saw of the processes that exited
        self.exited_reaped: dict[str, int] = {}  # ticks the postmasters reaped meanwhile

    def _poll(self) -> set[int]:
        alive = set()
        for pid, stat in children_of(set(self.postmasters.values())).items():
            alive.add(pid)
            self._last[pid] = stat.ticks
            self._owner.setdefault(pid, self._node_of[stat.ppid])
            if self._kind.get(pid) is None:
                self._kind[pid] = kind_of(title(pid))
        self.polls += 1
        return alive

    def _reaped(self) -> dict[str, int]:
        result = {}
        for node, pm in self.postmasters.items():
            stat = read_stat(pm)
            result[node] = stat.child_ticks if stat is not None else 0
        return result

    def start(self) -> None:
        self._reaped_base = self._reaped()
        self._poll()
        self._base = dict(self._last)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def stop(self) -> dict[str, dict[str, float]]:
        """Seconds of CPU per node and kind.  Reaped time that polling could not attribute (the
        processes lived less than one poll interval) counts as client backends': with autovacuum
        off they are the only children that come and go."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        alive = self._poll()
        reaped = self._reaped()
        ticks: dict[str, dict[str, float]] = {node: {} for node in self.postmasters}
        exited: dict[str, dict[str, int]] = {node: {} for node in self.postmasters}
        for pid, last in self._last.items():
            node = self._owner[pid]
            kind = self._kind.get(pid) or "client backends"
            used = last - self._base.get(pid, 0)
            if pid in alive:
                ticks[node][kind] = ticks[node].get(kind, 0) + used
            else:
                exited[node][kind] = exited[node].get(kind, 0) + used
        self.exited_seen = {node: sum(kinds.values()) for node, kinds in exited.items()}
        self.exited_reaped = {node: reaped[node] - self._reaped_base[node] for node in self.postmasters}
        for node in self.postmasters:
            # The reaped time is exact; what polling saw of each exited process only splits it by kind.
            total, seen = self.exited_reaped[node], self.exited_seen[node]
            for kind, used in exited[node].items():
                share = total * used / seen if seen > 0 else 0
                ticks[node][kind] = ticks[node].get(kind, 0) + share
            if seen <= 0 and total > 0:
                ticks[node]["client backends"] = ticks[node].get("client backends", 0) + total
        return {node: {kind: t / CLK_TCK for kind, t in kinds.items()} for node, kinds in ticks.items()}


class MachineLoad:
    """How many cores' worth of CPU other processes used while we measured."""

    def __init__(self, postmasters: list[int]) -> None:
        self.postmasters = postmasters

    @staticmethod
    def _busy() -> int:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return user + nice + system + irq + softirq + steal  # guest time is already in user

    def _ours(self) -> int:
        return tree_ticks(self.postmasters) + own_ticks()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = self._busy()
        self._ours0 = self._ours()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        busy = (self._busy() - self._busy0) / CLK_TCK
        ours = (self._ours() - self._ours0) / CLK_TCK
        return {
            "seconds": round(wall, 1),
            "busy_cores": round(busy / wall, 2) if wall > 0 else 0.0,
            "our_cores": round(ours / wall, 2) if wall > 0 else 0.0,
            "other_cores": round(max(busy - ours, 0.0) / wall, 2) if wall > 0 else 0.0,
            "loadavg_1m": os.getloadavg()[0],
        }
