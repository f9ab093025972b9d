"""Running statements on the other nodes of the cluster, inside the local transaction.

Each node's statements run in the transaction's block there (see shoal.fdw.transport), as the role
running the local statement; the local commit commits every node or none.  Statements go to all
nodes at once and are awaited together, so a cluster-wide change costs one round trip per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from shoal.fdw import backend, transport
from shoal.multiplexer.client import RemoteError, Stream
from shoal.multiplexer.protocol import decode_text_tuples

Statement = tuple[str, list[str | None]]  # SQL with $n (text parameters) and its parameters

_depth = 0  # > 0 while shoal itself runs statements: its DDL is not propagated again


@contextmanager
def internal() -> Iterator[None]:
    """shoal's own work: the DDL it runs here is its business, not the utility hook's."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def is_internal() -> bool:
    return _depth > 0


def run(per_node: Mapping[str, Iterable[Statement | str]]) -> None:
    """Run each node's statements, in order, on that node (this node's locally); wait for all."""
    me = backend.setting("shoal.node_name")
    streams: list[tuple[str, Stream]] = []
    for node, statements in per_node.items():
        for statement in statements:
            sql, params = (statement, []) if isinstance(statement, str) else statement
            if node == me:
                backend.query(sql, *params)
            else:
                streams.append((node, transport.run(node, sql, [25] * len(params), params, write=True,
                                                    cache=False)))
    wait(streams)


def rows(node: str, sql: str, params: list[str | None] | None = None) -> list[tuple]:
    """A query's rows, as text, from ``node`` (this one's locally), read in the transaction's block
    there: they see what the transaction did on that node and the locks it holds."""
    params = params or []
    if node == backend.setting("shoal.node_name"):
        return [tuple(None if v is None else str(v) for v in row) for row in backend.query(sql, *params)]
    stream = transport.run(node, sql, [25] * len(params), params, write=True, cache=False)
    return decode_text_tuples(b"".join(stream))


def wait(streams: list[tuple[str, Stream]]) -> None:
    """Wait for every stream; the first error is raised, saying which node it came from."""
    first: tuple[str, RemoteError] | None = None
    for node, stream in streams:
        try:
            stream.wait()
        except RemoteError as exc:
            first = first or (node, exc)
    if first is not None:
        node, exc = first
        exc.args = (f"on node {node}: {exc.args[0] if exc.args else exc}", *exc.args[1:])
        if hasattr(exc, "message"):
            exc.message = f"on node {node}: {exc.message}"
        raise exc

