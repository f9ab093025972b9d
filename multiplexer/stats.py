"""Counters of one multiplexer: per peer and in total, for shoal.mux_stats and Prometheus."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field


@dataclass
class PeerStats:
    msgs_in: int = 0
    msgs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    # round trips (request sent -> first answer), microseconds; a bounded window
    latencies: deque = field(default_factory=lambda: deque(maxlen=4096))

    def percentile(self, fraction: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


@dataclass
class Snapshot:
    """What the daemon reports: one row per peer plus a total."""

    node: str
    peers: dict[str, tuple[str, PeerStats]]  # name -> (state, stats)
    jobs_in_flight: int
    jobs_queued: int
    workers_busy: int
    workers: int
    malformed: int

    def rows(self) -> list[dict]:
        rows = []
        total = PeerStats()
        for name, (state, stats) in sorted(self.peers.items()):
            rows.append(self._row(name, state, stats))
            total.msgs_in += stats.msgs_in
            total.msgs_out += stats.msgs_out
            total.bytes_in += stats.bytes_in
            total.bytes_out += stats.bytes_out
            total.latencies.extend(stats.latencies)
        rows.append(self._row("total", "up", total))
        return rows

    def _row(self, name: str, state: str, stats: PeerStats) -> dict:
        return {
            "peer": name,
            "state": state,
            "msgs_in": stats.msgs_in,
            "msgs_out": stats.msgs_out,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "jobs_in_flight": self.jobs_in_flight,
            "jobs_queued": self.jobs_queued,
            "workers_busy": self.workers_busy,
            "workers": self.workers,
            "latency_p50_us": stats.percentile(0.50),
            "latency_p95_us": stats.percentile(0.95),
            "latency_p99_us": stats.percentile(0.99),
        }

    def to_json(self) -> str:
        return json.dumps(self.rows())

    def to_prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
            lines.append(f"# HELP shoal_mux_{name} {help_text}")
            lines.append(f"# TYPE shoal_mux_{name} {kind}")
            for labels, value in samples:
                text = ",".join(f'{k}="{v}"' for k, v in labels.items())
                lines.append(f"shoal_mux_{name}{{{text}}} {value}")

        base = {"node": self.node}
        peers = sorted(self.peers.items())
        for counter, help_text in (
            ("msgs_in", "Messages received from the peer."),
            ("msgs_out", "Messages sent to the peer."),
            ("bytes_in", "Bytes received from the peer."),
            ("bytes_out", "Bytes sent to the peer."),
        ):
            metric(f"{counter}_total", "counter", help_text,
                   [({**base, "peer": n}, getattr(s, counter)) for n, (_, s) in peers])
        metric("peer_up", "gauge", "1 when the channel to the peer is up.",
               [({**base, "peer": n}, 1 if st == "up" else 0) for n, (st, _) in peers])
        latency = []
        for name, (_, stats) in peers:
            for q in (0.5, 0.95, 0.99):
                value = stats.percentile(q)
                if value is not None:
                    latency.append(({**base, "peer": name, "quantile": str(q)}, value / 1e6))
        metric("request_latency_seconds", "gauge", "Round trip of remote requests.", latency)
        metric("jobs_in_flight", "gauge", "Jobs running on this node's workers.",
               [(base, self.jobs_in_flight)])
        metric("jobs_queued", "gauge", "Jobs waiting for a worker.", [(base, self.jobs_queued)])
        metric("workers_busy", "gauge", "Workers running a job.", [(base, self.workers_busy)])
        metric("workers", "gauge", "Workers registered.", [(base, self.workers)])
        metric("malformed_frames_total", "counter", "Frames dropped as malformed.", [(base, self.malformed)])
        return "\n".join(lines) + "\n"
