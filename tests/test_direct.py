"""Writing into one stream socket from several processes (multiplexer/direct.py), with real
sockets and real processes: the lock excludes other processes, frames arrive whole however the
writers race, and a socket passed over a Unix socket is the same connection."""

from __future__ import annotations

import os
import socket

from shoal.multiplexer import direct, framing, protocol
from shoal.multiplexer.direct import DirectChannel


def test_the_lock_is_the_sockets_whatever_descriptor_holds_it() -> None:
    a, b = socket.socketpair()
    with a, b:
        copy = os.dup(a.fileno())
        try:
            assert direct.try_lock(a.fileno())
            assert _child(lambda: direct.try_lock(copy)) == 0  # another process: excluded
            direct.unlock(a.fileno())
            assert _child(lambda: direct.try_lock(copy)) == 1
        finally:
            os.close(copy)


def test_racing_writers_deliver_whole_frames() -> None:
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # as the multiplexer's channel is: partial writes happen
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    frames_each, writers = 300, 3
    pids = []
    for w in range(writers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            channel = DirectChannel("peer", writer.fileno(), 1)
            try:
                for i in range(frames_each):
                    payload = bytes([w]) * (i * 37 % 9000)
                    body = protocol.pack([[protocol.Kind.DATA, "n", b"", i, None, payload]])
                    while not channel.write(framing.encode(body)):
                        os.sched_yield()  # another writer holds the channel
            finally:
                os._exit(0)
        pids.append(pid)
    frames = []
    frame_reader = framing.FrameReader()
    reader.settimeout(20)
    while len(frames) < frames_each * writers:
        frames.extend(frame_reader.feed(reader.recv(65536)))
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    seen: dict[int, list[int]] = {}
    for frame in frames:
        [[_, _, _, req, _, payload]] = protocol.unpack(frame)
        assert len(payload) == req * 37 % 9000 and len(set(payload)) <= 1
        seen.setdefault(payload[0] if payload else -1, []).append(req)
    # each writer's frames arrive in its own order
    for w in range(writers):
        mine = seen.get(w, [])
        assert mine == sorted(mine)
    reader.close()
    writer.close()


def test_a_passed_socket_is_the_same_connection() -> None:
    there, here = socket.socketpair()  # stands for the TCP channel to a peer
    mux_end, backend_end = socket.socketpair()
    with there, here, mux_end, backend_end:
        sent = direct.send_with_fd(mux_end, b"lent", here.fileno())
        assert sent == 4
        data, fds = direct.recv_with_fds(backend_end, 100)
        assert data == b"lent" and len(fds) == 1
        os.write(fds[0], b"from the backend")
        assert there.recv(100) == b"from the backend"
        os.close(fds[0])


def test_writing_to_a_closed_channel_fails() -> None:
    there, here = socket.socketpair()
    copy = os.dup(here.fileno())
    channel = DirectChannel("peer", copy, 1)
    here.shutdown(socket.SHUT_RDWR)  # what the multiplexer does when the channel goes down
    try:
        channel.write(b"x" * 10)
    except OSError:
        pass
    else:
        raise AssertionError("a write into a shut down channel succeeded")
    finally:
        channel.close()
        here.close()
        there.close()


def _child(action) -> int:
    """Run action in a forked process: its result as the exit status (1: True)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os._exit(1 if action() else 0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
