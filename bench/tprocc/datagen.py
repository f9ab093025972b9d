"""TPROC-C's initial population, written once per run to COPY text files that every system then loads.

The sizes and value ranges are TPC-C's, as HammerDB builds them: 100,000 items; per warehouse 100,000
stock rows and 10 districts; per district 3,000 customers (one history row each) and 3,000 orders, the last
900 of them undelivered (in new_order), with 5 to 15 lines each.  Like HammerDB: half the customers have
bad credit ('BC'), discounts up to 0.5, customer ids 1..1000 take the 1,000 last names in order and the
others a NURand(255, 0, 999) one.  The random generator is seeded: every run (and every system) gets the
same rows.  Random strings are slices of one random pool, which makes generation fast; their lengths are
the specification's.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator
from pathlib import Path

ITEMS = 100_000
DISTRICTS = 10
CUSTOMERS = 3_000  # per district
ORDERS = 3_000  # per district
FIRST_NEW_ORDER = 2_101  # orders from here on are undelivered
SYLLABLES = ("BAR", "OUGHT", "ABLE", "PRI", "PRES", "ESE", "ANTI", "CALLY", "ATION", "EING")
NURAND_C_LAST = 123  # HammerDB's run-time constant C for NURand(255, 0, 999)
SEED = 20261121
TIMESTAMP = "2026-01-01 00:00:00+00"
TABLE_ORDER = ("item", "warehouse", "district", "customer", "history", "stock", "orders", "new_order",
               "order_line")

Progress = Callable[[str], None]


def last_name(number: int) -> str:
    """TPC-C's last name of a number in 0..999: three syllables."""
    return SYLLABLES[number // 100] + SYLLABLES[number // 10 % 10] + SYLLABLES[number % 10]


def nurand(rng: random.Random, a: int, x: int, y: int, c: int) -> int:
    """TPC-C's non-uniform random number NURand(A, x, y)."""
    return (((rng.randint(0, a) | rng.randint(x, y)) + c) % (y - x + 1)) + x


class Strings:
    """Random alphanumeric and numeric strings, cut from pre-generated random pools."""

    def __init__(self, rng: random.Random, size: int = 1 << 20) -> None:
        self.rng = rng
        self.alpha = "".join(rng.choices(string.ascii_letters + string.digits, k=size))
        self.digits = "".join(rng.choices(string.digits, k=size))

    def a(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        start = self.rng.randrange(len(self.alpha) - n)
        return self.alpha[start:start + n]

    def n(self, length: int) -> str:
        start = self.rng.randrange(len(self.digits) - length)
        return self.digits[start:start + length]

    def data(self, low: int, high: int) -> str:
        """i_data / s_data: 10% of them contain "ORIGINAL" somewhere."""
        text = self.a(low, high)
        if self.rng.random() < 0.1:
            at = self.rng.randint(0, len(text) - 8)
            text = text[:at] + "ORIGINAL" + text[at + 8:]
        return text

    def address(self) -> str:
        """street_1, street_2, city, state, zip as tab-separated COPY fields."""
        state = "".join(self.rng.choices(string.ascii_uppercase, k=2))
        return "\t".join((self.a(10, 20), self.a(10, 20), self.a(10, 20), state, self.n(4) + "11111"))


def _items(rng: random.Random, s: Strings) -> Iterator[str]:
    for i in range(1, ITEMS + 1):
        price = rng.randint(100, 10000) / 100
        yield f"{i}\t{rng.randint(1, 10000)}\t{s.a(14, 24)}\t{price:.2f}\t{s.data(26, 50)}"


def _warehouse(rng: random.Random, s: Strings, w: int) -> Iterator[str]:
    yield f"{w}\t{s.a(6, 10)}\t{s.address()}\t{rng.randint(0, 2000) / 10000:.4f}\t300000.00"


def _districts(rng: random.Random, s: Strings, w: int) -> Iterator[str]:
    for d in range(1, DISTRICTS + 1):
        tax = rng.randint(0, 2000) / 10000
        yield f"{w}\t{ORDERS + 1}\t{d}\t30000.00\t{tax:.4f}\t{s.a(6, 10)}\t{s.address()}"


def _customers(rng: random.Random, s: Strings, w: int, d: int) -> Iterator[str]:
    for c in range(1, CUSTOMERS + 1):
        last = last_name(c - 1 if c <= 1000 else nurand(rng, 255, 0, 999, NURAND_C_LAST))
        credit = "BC" if rng.random() < 0.5 else "GC"
        discount = rng.randint(0, 50) / 100
        yield (f"{TIMESTAMP}\t{c}\t{w}\t{d}\t1\t0\t{s.a(8, 16)}\tOE\t{last}\t{s.address()}\t{s.n(16)}\t"
               f"{credit}\t50000.00\t{discount:.4f}\t-10.00\t10.00\t{s.a(300, 500)}")


def _history(s: Strings, w: int, d: int) -> Iterator[str]:
    for c in range(1, CUSTOMERS + 1):
        yield f"{TIMESTAMP}\t{c}\t{w}\t{w}\t{d}\t{d}\t10.00\t{s.a(12, 24)}"


def _stock(rng: random.Random, s: Strings, w: int) -> Iterator[str]:
    for i in range(1, ITEMS + 1):
        dists = "\t".join(s.a(24, 24) for _ in range(10))
        yield f"{i}\t{w}\t0\t{rng.randint(10, 100)}\t0\t0\t{dists}\t{s.data(26, 50)}"


def _orders(rng: random.Random, s: Strings, w: int, d: int,
            orders: list[str], new_orders: list[str], lines: list[str]) -> None:
    customers = list(range(1, CUSTOMERS + 1))
    rng.shuffle(customers)  # each customer has exactly one initial order
    for o in range(1, ORDERS + 1):
        count = rng.randint(5, 15)
        delivered = o < FIRST_NEW_ORDER
        carrier = str(rng.randint(1, 10)) if delivered else r"\N"
        orders.append(f"{TIMESTAMP}\t{o}\t{w}\t{customers[o - 1]}\t{d}\t{carrier}\t{count}\t1")
        if not delivered:
            new_orders.append(f"{w}\t{o}\t{d}")
        for n in range(1, count + 1):
            when = TIMESTAMP if delivered else r"\N"
            amount = "0.00" if delivered else f"{rng.randint(1, 999999) / 100:.2f}"
            item = rng.randint(1, ITEMS)
            lines.append(f"{when}\t{o}\t{w}\t{item}\t{w}\t{d}\t{n}\t5\t{amount}\t{s.a(24, 24)}")


def generate(directory: Path, warehouses: int, progress: Progress) -> dict[str, Path]:
    """Write one COPY text file per table (columns in schema order) for `warehouses` warehouses."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    s = Strings(rng)
    files = {table: directory / f"{table}.tsv" for table in TABLE_ORDER}
    out = {table: path.open("w") for table, path in files.items()}
    try:
        def write(table: str, rows: Iterator[str] | list[str]) -> None:
            out[table].writelines(row + "\n" for row in rows)

        progress(f"tprocc: generating {ITEMS:,} items")
        write("item", _items(rng, s))
        for w in range(1, warehouses + 1):
            progress(f"tprocc: generating warehouse {w} of {warehouses}")
            write("warehouse", _warehouse(rng, s, w))
            write("district", _districts(rng, s, w))
            write("stock", _stock(rng, s, w))
            for d in range(1, DISTRICTS + 1):
                write("customer", _customers(rng, s, w, d))
                write("history", _history(s, w, d))
                orders: list[str] = []
                new_orders: list[str] = []
                lines: list[str] = []
                _orders(rng, s, w, d, orders, new_orders, lines)
                write("orders", orders)
                write("new_order", new_orders)
                write("order_line", lines)
    finally:
        for f in out.values():
            f.close()
    return files
