"""The garbage collector's settings for a multiplexer.

Moving a message allocates a few container objects (the message, its decoded fields), and a busy
multiplexer keeps thousands of them alive at once (the messages in flight).  With CPython's
defaults the youngest generation is collected every 700 allocations, what is still in flight
survives into the older generations, and their collections walk the whole heap: every module,
function and constant imported since the interpreter started.  At 300,000 pings a second that
was a third of each multiplexer's CPU (``SELECT shoal.ping(...)``, bench/transport.py).

The hot paths make no reference cycles, so little is lost by collecting less often, and nothing
by never walking again what exists once a process is set up.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000  # allocations between two collections of the youngest generation


def settle() -> None:
    """Freeze what exists now (it is never walked again), and collect the youngest generation
    less often.  Called once the process has set itself up.

    Workers and backends do not need it: a job or a query frees what it allocated before the
    next one, so their collector hardly runs (no collection in 5,000 point queries on a worker)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD)
