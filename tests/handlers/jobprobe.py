"""A stand-in for the multiplexer and its workers, for tests/test_jobs.py.

The test server runs it through ``shoal.mux_entry = 'jobprobe:mux_main'`` and
``shoal.worker_entry = 'jobprobe:main'``.  Each process serves a Unix socket, at
``<jobprobe.socket>.<index>`` (``.mux`` for the multiplexer), on which the test sends pickled
requests ``(op, args, kwargs)``: ``op`` is a function of ``_shoal_pg`` to call, or one of the probe's
own (``pid``, ``execute`` with a choice of sink).  Each reply is ``("ok", value)`` or
``("exc", type_name, str, attributes)``.  Frames are a 4-byte big-endian length and the pickle.
"""

from __future__ import annotations

import builtins
import os
import pickle
import socket
import struct
import time
from typing import Any

import _shoal_pg as pg


class Terminating(Exception):
    pass


def _wait(fd: int, timeout: float) -> bool:
    """Wait for fd on the process latch: cancels and termination interrupt it."""
    while True:
        try:
            return pg.wait(fd, timeout)
        except pg.QueryCanceled as exc:
            if str(exc).startswith("terminating"):
                raise Terminating() from None
            pg.clear_cancel()  # a cancel that arrived while no job ran


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        if not _wait(conn.fileno(), 1.0):
            continue
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _describe(exc: BaseException) -> tuple:
    names = ("sqlstate", "message", "detail", "hint", "context", "position")
    attrs = {name: getattr(exc, name, None) for name in names}
    return ("exc", type(exc).__name__, str(exc), attrs)


def _execute(args: list, kwargs: dict) -> Any:
    chunks: list[bytes] = []
    mode = kwargs.pop("sink_mode", "collect")
    wrap = kwargs.pop("wrap", None)  # pass the parameters as bytearray or memoryview objects
    if wrap:
        args[2] = [getattr(builtins, wrap)(p) if isinstance(p, bytes) else p for p in args[2]]
    calls = {"n": 0}

    def raising(chunk: bytes) -> None:
        calls["n"] += 1
        raise ValueError("the sink refuses")

    def nested(chunk: bytes) -> None:
        chunks.append(chunk)
        try:
            pg.execute("SELECT 1", [], [], False, None, None)
        except RuntimeError as exc:
            chunks.append(("nested refused", str(exc)))

    def cancel_self(chunk: bytes) -> None:
        chunks.append(chunk)
        os.kill(os.getpid(), 2)  # SIGINT: as the multiplexer cancels a job
        for _ in range(1000):  # as a sink waiting for credit checks, and sees the cancel
            pg.check_interrupts()

    sink = {"collect": chunks.append, "none": None, "raise": raising, "nested": nested,
            "cancel": cancel_self}[mode]
    tag, rows = pg.execute(*args, sink=sink, **kwargs)
    return tag, rows, chunks


def _handle(req: tuple) -> tuple:
    op, args, kwargs = req
    try:
        if op == "pid":
            return ("ok", os.getpid())
        if op == "execute":
            return ("ok", _execute(list(args), dict(kwargs)))
        if op == "bench":  # (n, execute's arguments): seconds for n executions, rows to a list
            n, rest = args[0], list(args[1:])
            chunks: list[bytes] = []
            start = time.perf_counter()
            for _ in range(n):
                pg.execute(*rest, sink=chunks.append, **kwargs)
            return ("ok", time.perf_counter() - start)
        if op == "rss_kb":
            with open("/proc/self/status") as status:
                return ("ok", next(int(line.split()[1]) for line in status if line.startswith("VmRSS")))
        return ("ok", getattr(pg, op)(*args, **kwargs))
    except Exception as exc:
        return _describe(exc)
    except pg.QueryCanceled as exc:
        if str(exc).startswith("terminating"):
            raise
        pg.clear_cancel()
        return _describe(exc)


def _serve(name: str) -> None:
    base = pg.setting("jobprobe.socket")
    if not base:
        while True:
            _wait(-1, 1.0)
    path = f"{base}.{name}"
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    server.setblocking(False)
    while True:
        if not _wait(server.fileno(), 1.0):
            continue
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            continue
        conn.setblocking(True)
        with conn:
            while True:
                header = _recv_exact(conn, 4)
                if header is None:
                    break
                body = _recv_exact(conn, struct.unpack(">I", header)[0])
                if body is None:
                    break
                reply = pickle.dumps(_handle(pickle.loads(body)))
                conn.sendall(struct.pack(">I", len(reply)) + reply)


def main(index: int) -> None:
    try:
        _serve(str(index))
    except Terminating:
        return


def mux_main() -> None:
    try:
        _serve("mux")
    except Terminating:
        return
