"""The ping part of bench/transport.py, run as a child process.

A node's multiplexer listens on a Unix socket that only the servers' OS user may open, so
bench/transport.py runs this file as that user (``runuser -u postgres -- python bench/pingpong.py
--spec JSON`` when it runs as root).  It measures, and prints one JSON document on stdout:

* pings between the multiplexers themselves: n1's multiplexer sends them to n2's and matches the
  answers (``shoal.ping()``, ``MuxClient.ping_run``), one at a time and with a window in flight;
  this is the issue's measure;
* unloaded round-trip latency, one ping at a time (``MuxClient.ping``), to each target node;
* pipelined pings: one connection to n1's multiplexer keeps a window of K pings in flight,
  refilling as PONGs arrive, either one ping per frame ("single") or as many per frame as the PONGs
  just received ("batched"), over the local hop a backend uses (a Unix stream socket with
  length-prefixed frames, ``shoal.multiplexer.framing``);
* the same for a bare pyzmq DEALER/ROUTER echo between two Python processes over TCP, as the
  floor of Python + ZeroMQ on this machine.

While pipelining it also measures the CPU time of the client, the echo server and the given
multiplexers (from /proc), per ping.  Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# `bench` must be importable; the installed `shoal` (it has shoal.multiplexer) must win over the
# source tree, so the repository goes last on the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO] + [str(REPO)]

import msgpack  # noqa: E402
import zmq  # noqa: E402

from bench.cpu import CLK_TCK, read_stat  # noqa: E402
from bench.report import progress as _progress  # noqa: E402
from shoal.multiplexer import framing, protocol  # noqa: E402
from shoal.multiplexer.client import MuxClient  # noqa: E402
from shoal.multiplexer.protocol import Kind  # noqa: E402

LOCAL_HOP = "unix stream socket, length-prefixed frames"

STALL_MS = 10_000  # no answer for this long: the run failed
_ids = iter(range(1, 1 << 30))


def progress(message: str) -> None:
    _progress(message, prefix="ping ", stream=sys.stderr)



def percentiles(samples_us: list[float]) -> dict[str, float]:
    ordered = sorted(samples_us)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    mean = statistics.fmean(ordered)
    return {"count": len(ordered), "mean_us": round(mean, 1), "p50_us": round(at(0.50), 1),
            "p99_us": round(at(0.99), 1), "max_us": round(ordered[-1], 1),
            "rate_per_s": round(1e6 / mean)}


class CpuWatch:
    """CPU seconds of some processes (by pid) and of this one, between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def _now(self) -> dict[str, float]:
        times = os.times()
        values = {"client": times.user + times.system}
        for name, pid in self.pids.items():
            stat = read_stat(pid)
            values[name] = stat.ticks / CLK_TCK if stat is not None else float("nan")
        return values

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        end = self._now()
        return {name: end[name] - self._start[name] for name in end}


class LocalLink:
    """A connection to the node's multiplexer, as a backend's client makes it."""

    def __init__(self, path: str) -> None:
        self.sock = framing.connect(path)
        self.reader = framing.FrameReader()
        self.pending: list[bytes] = []
        self.poller = zmq.Poller()
        self.poller.register(self.sock.fileno(), zmq.POLLIN)

    def send(self, frame: bytes) -> None:
        self.sock.sendall(framing.encode(frame))

    def recv(self, what: str) -> bytes:
        while not self.pending:
            if not self.poller.poll(STALL_MS):
                raise SystemExit(f"{what}: no answer for {STALL_MS / 1000:.0f} s")
            data = self.sock.recv(framing.READ_BYTES)
            if not data:
                raise SystemExit(f"{what}: the multiplexer closed the connection")
            self.pending.extend(self.reader.feed(data))
        return self.pending.pop(0)

    def close(self) -> None:
        self.sock.close()


def _unbounded(sock: zmq.Socket) -> None:
    """No high-water mark: a ROUTER drops what goes past it (1000 messages by default), which
    stalls a window of 1024 echoes."""
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


def _dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    _unbounded(sock)
    # Not 4 bytes: the multiplexer takes a 4-byte id for a backend's pid and checks that it lives.
    sock.setsockopt(zmq.ROUTING_ID, b"bench-%d-%d" % (os.getpid(), next(_ids)))
    sock.connect(endpoint)
    return sock


def _recv(sock: zmq.Socket, what: str) -> bytes:
    if not sock.poll(STALL_MS):
        raise SystemExit(f"{what}: no answer for {STALL_MS / 1000:.0f} s")
    return sock.recv()


def mux_latency(path: str, node: str, count: int) -> dict[str, Any]:
    """One ping at a time through MuxClient.ping, as a backend would."""
    client = MuxClient(path)
    try:
        for _ in range(min(200, count)):  # warm-up: the channel, the caches
            client.ping(node)
        samples = []
        clock = time.perf_counter
        for _ in range(count):
            start = clock()
            client.ping(node)
            samples.append((clock() - start) * 1e6)
    finally:
        client.sock.close()
    return percentiles(samples)


def mux_pipelined(path: str, node: str, window: int, seconds: float,
                  batched: bool, watch: CpuWatch) -> dict[str, Any]:
    """Keep `window` pings to `node` in flight for `seconds`; pings answered per second."""
    sock = LocalLink(path)
    pack, unpackb = protocol.pack, msgpack.unpackb
    ping, pong = int(Kind.PING), int(Kind.PONG)
    req = 0

    def send(n: int) -> None:
        nonlocal req
        if batched:
            sock.send(pack([[ping, node, b"", req + i, None, b""] for i in range(1, n + 1)]))
            req += n
        else:
            for _ in range(n):
                req += 1
                sock.send(pack([[ping, node, b"", req, None, b""]]))

    def answered(frame: bytes) -> int:
        n = 0
        for msg in unpackb(frame, raw=False):
            if msg[0] == pong:
                n += 1
            else:
                detail = protocol.decode_error(msg[5]) if msg[0] == Kind.ERROR else msg
                raise SystemExit(f"ping to {node} answered {detail}")
        return n

    try:
        send(window)  # warm-up round, not timed
        waiting = window
        while waiting:
            waiting -= answered(sock.recv(f"ping {node}"))
        in_flight, received, frames = window, 0, 0
        watch.start()
        start = time.perf_counter()
        end = start + seconds
        send(window)
        while True:
            n = answered(sock.recv(f"ping {node}"))
            received += n
            frames += 1
            now = time.perf_counter()
            if now >= end:
                in_flight -= n
                break
            send(n)
        elapsed = now - start
        cpu = watch.stop()
        while in_flight > 0:  # leave nothing behind in the multiplexers
            in_flight -= answered(sock.recv(f"ping {node}"))
    finally:
        sock.close()
    return {
        "pings": received,
        "seconds": round(elapsed, 3),
        "rate_per_s": round(received / elapsed),
        "pongs_per_frame": round(received / frames, 1),
        "cpu_us_per_ping": {name: round(s * 1e6 / received, 2) for name, s in cpu.items()},
    }


def mux_to_mux(path: str, node: str, window: int, seconds: float, watch: CpuWatch) -> dict[str, Any]:
    """n1's multiplexer exchanges pings with node's itself, `window` in flight, for about
    `seconds` (shoal.ping: MuxClient.ping_run); no backend hop on the way."""
    client = MuxClient(path)
    try:
        probe = client.ping_run(node, min(20_000, 200 * window), window)  # warm-up, and the pace
        count = max(1_000, min(10_000_000, int(probe["pings"] / probe["seconds"] * seconds)))
        watch.start()
        run_ = client.ping_run(node, count, window)
        cpu = watch.stop()
    finally:
        client.sock.close()
    return {
        "window": window,
        "pings": run_["pings"],
        "seconds": round(run_["seconds"], 3),
        "rate_per_s": round(run_["pings"] / run_["seconds"]),
        "p50_us": run_["p50_us"], "p99_us": run_["p99_us"],
        "cpu_us_per_ping": {name: round(s * 1e6 / run_["pings"], 2) for name, s in cpu.items()},
    }


# -- the bare pyzmq floor -----------------------------------------------------------------------

def echo_server() -> None:
    """A ROUTER that sends every frame back; prints its endpoint, runs until killed."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    _unbounded(sock)
    sock.bind("tcp://127.0.0.1:*")
    print(sock.getsockopt(zmq.LAST_ENDPOINT).decode(), flush=True)
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        send(recv())


def echo_latency(ctx: zmq.Context, endpoint: str, count: int) -> dict[str, Any]:
    sock = _dealer(ctx, endpoint)
    frame = protocol.pack([[int(Kind.PING), "n2", b"", 1, None, b""]])  # the size of a ping
    try:
        for _ in range(min(200, count)):
            sock.send(frame)
            _recv(sock, "echo")
        samples = []
        clock = time.perf_counter
        for _ in range(count):
            start = clock()
            sock.send(frame)
            _recv(sock, "echo")
            samples.append((clock() - start) * 1e6)
    finally:
        sock.close(0)
    return percentiles(samples)


def echo_pipelined(ctx: zmq.Context, endpoint: str, window: int, seconds: float,
                   watch: CpuWatch) -> dict[str, Any]:
    """`window` one-message frames in flight, each answered by the echo server."""
    sock = _dealer(ctx, endpoint)
    pack = protocol.pack
    ping = int(Kind.PING)
    req = 0
    try:
        for _ in range(window):
            sock.send(pack([[ping, "n2", b"", 0, None, b""]]))
        for _ in range(window):
            _recv(sock, "echo")
        received = 0
        watch.start()
        start = time.perf_counter()
        end = start + seconds
        for _ in range(window):
            req += 1
            sock.send(pack([[ping, "n2", b"", req, None, b""]]))
        while True:
            _recv(sock, "echo")
            received += 1
            if received % 64 == 0 and time.perf_counter() >= end:
                break
            req += 1
            sock.send(pack([[ping, "n2", b"", req, None, b""]]))
        elapsed = time.perf_counter() - start
        cpu = watch.stop()
        for _ in range(window - 1):
            _recv(sock, "echo")
    finally:
        sock.close(0)
    return {
        "pings": received,
        "seconds": round(elapsed, 3),
        "rate_per_s": round(received / elapsed),
        "pongs_per_frame": 1.0,
        "cpu_us_per_ping": {name: round(s * 1e6 / received, 2) for name, s in cpu.items()},
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    path, seconds, count = spec["ipc_path"], spec["seconds"], spec["latency_count"]
    muxes = {f"multiplexer {node}": pid for node, pid in spec["mux_pids"].items()}
    ctx = zmq.Context.instance()
    result: dict[str, Any] = {"local_hop": LOCAL_HOP, "latency": [], "pipelined": [], "echo_latency": None,
                              "echo_pipelined": []}
    progress(f"local hop: {LOCAL_HOP}")
    for node in spec["targets"]:
        progress(f"latency to {node}'s multiplexer: {count} pings one at a time")
        lat = mux_latency(path, node, count)
        result["latency"].append({"target": node, **lat})
        progress(f"  p50 {lat['p50_us']} us, p99 {lat['p99_us']} us, {lat['rate_per_s']:,} pings/s")
    result["mux_to_mux"] = []
    for window in [1, *spec["windows"]]:
        run_ = mux_to_mux(path, "n2", window, seconds, CpuWatch(muxes))
        result["mux_to_mux"].append(run_)
        progress(f"between the multiplexers (shoal.ping), {window} in flight: "
                 f"{run_['rate_per_s']:,} pings/s, p50 {run_['p50_us']} us")
    for node in spec["targets"]:
        for window in spec["windows"]:
            for batched in (False, True):
                framing = "batched" if batched else "single"
                run_ = mux_pipelined(path, node, window, seconds, batched, CpuWatch(muxes))
                result["pipelined"].append({"target": node, "window": window, "framing": framing, **run_})
                progress(f"pipelined to {node}, window {window}, {framing} frames: "
                         f"{run_['rate_per_s']:,} pings/s ({run_['pongs_per_frame']} per frame)")
    if spec.get("echo", True):
        server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--echo-server"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            echo_endpoint = server.stdout.readline().strip()
            progress(f"bare pyzmq echo over {echo_endpoint}: {count} round trips one at a time")
            lat = echo_latency(ctx, echo_endpoint, count)
            result["echo_latency"] = lat
            progress(f"  p50 {lat['p50_us']} us, p99 {lat['p99_us']} us, {lat['rate_per_s']:,} round trips/s")
            for window in spec["windows"]:
                watch = CpuWatch({"echo server": server.pid})
                run_ = echo_pipelined(ctx, echo_endpoint, window, seconds, watch)
                result["echo_pipelined"].append({"window": window, "framing": "single", **run_})
                progress(f"bare echo pipelined, window {window}: {run_['rate_per_s']:,} round trips/s")
        finally:
            server.kill()
            server.wait()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/pingpong.py", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help="what to measure, as JSON (see bench/transport.py)")
    parser.add_argument("--echo-server", action="store_true", help="run the bare echo server")
    args = parser.parse_args(argv)
    if args.echo_server:
        echo_server()
        return 0
    if not args.spec:
        parser.error("--spec is required")
    print(json.dumps(run(json.loads(args.spec))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
