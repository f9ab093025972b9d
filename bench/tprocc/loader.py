"""Loading TPROC-C into one system: the nine tables created as plain tables on the first node, the
generated files COPYed in, HammerDB's secondary indexes, then (on the sharded systems) every table but
item distributed by its warehouse id, colocated with warehouse, and item made global; finally the five
functions and VACUUM ANALYZE on every node."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.systems import System
from bench.tprocc import datagen, schema

Progress = Callable[[str], None]
FUNCTIONS = Path(__file__).with_name("functions.sql")
COPY_CHUNK = 1 << 20


def create_functions(system: System) -> None:
    """The five transactions, on the first node (the virtual users connect there)."""
    with system.connect() as conn:
        conn.execute(FUNCTIONS.read_text())


def load(system: System, files: dict[str, Path], partitions: int, progress: Progress) -> dict[str, Any]:
    """Load the generated files into `system`; returns timings, row counts and which node holds which
    warehouse."""
    start = time.monotonic()
    rows: dict[str, int] = {}
    with system.connect() as conn:
        for statement in schema.create_statements():
            conn.execute(statement)
        for table in datagen.TABLE_ORDER:
            with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy, \
                    files[table].open("rb") as f:
                while chunk := f.read(COPY_CHUNK):
                    copy.write(chunk)
            rows[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        progress(f"{system.name}: tprocc rows loaded: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()))
        for statement in schema.INDEXES:
            conn.execute(statement)
    loaded_s = time.monotonic() - start
    if system.sharded:
        for table, column in schema.SHARD_KEYS.items():
            progress(f"{system.name}: distributing {table} by {column} into {partitions} partitions")
            system.distribute(table, column, partitions, None if table == "warehouse" else "warehouse")
        for table in schema.GLOBAL_TABLES:
            progress(f"{system.name}: making {table} global")
            system.make_global(table)
    distributed_s = time.monotonic() - start - loaded_s
    create_functions(system)
    for i in range(len(system.nodes)):
        with system.connect(i) as conn:
            conn.execute("VACUUM ANALYZE")
    with system.connect() as conn:
        for table, count in rows.items():
            now = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if now != count:
                raise RuntimeError(f"{system.name}: {table} had {count} rows loaded, "
                                   f"{now} after distributing")
        homes = conn.execute("SELECT w_id, tableoid::regclass::text FROM warehouse ORDER BY w_id").fetchall()
    placement = {int(w): system.node_of(str(part)) for w, part in homes}
    progress(f"{system.name}: warehouses by node: " + ", ".join(f"w{w} {n}" for w, n in placement.items()))
    return {"rows": rows, "load_s": round(loaded_s, 1), "distribute_s": round(distributed_s, 1),
            "total_s": round(time.monotonic() - start, 1), "warehouse_nodes": placement}
