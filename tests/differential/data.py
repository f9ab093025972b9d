"""The differential suite's rows: deterministic, small, and full of edge cases (NULLs, unicode, special
floats, infinities, empty arrays...). Every value is a string in PostgreSQL's text input syntax (or
None for NULL), so that the same rows go through COPY into plain PostgreSQL and into shoal alike.
"""

from __future__ import annotations

import random
import uuid

Row = tuple[str | None, ...]

COUNTRIES = [("de", "Germany", "19.00"), ("fr", "France", "20.00"), ("jp", "Japan", "10.00"),
             ("us", "United States", None), ("br", "Brazil", "17.50"), ("in", "India", "18.00"),
             ("se", "Sweden", "25.00"), ("ng", "Nigeria", "7.50"), ("nz", "New Zealand", "15.00"),
             ("ch", "Switzerland", "8.10")]
STATUSES = ["new", "paid", "shipped", "cancelled"]
CATEGORIES = ["books", "garden", "toys", "food", None]
NAMES = ["Ann", "Bob", "Chloé", "Dmitri", "Eve", "François", "Gül", "Hiro", "Ingrid", "José", "Ke", "Łukasz",
         "Mia", "Nnamdi", "O'Brien", "Pía", "Quinn", "Raj", "Søren", "Tomás", "Ümit", "Vera", "Wen", "Xavi",
         "Yara", "Zoë", "日本", "back\\slash", "tab\there", ""]


def _array(values: list[str | None]) -> str:
    def one(v: str | None) -> str:
        if v is None:
            return "NULL"
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "{" + ",".join(one(v) for v in values) + "}"


def _maybe(rng: random.Random, value: str, null_share: float = 0.1) -> str | None:
    return None if rng.random() < null_share else value


def _user_ids(rng: random.Random, count: int) -> list[int]:
    ids = rng.sample(range(1, 5000), count - 4)
    return ids + [-7, 0, 2**40 + 3, 9_000_000_000_000_000_001]


def users(seed: int = 1, count: int = 300) -> list[Row]:
    rng = random.Random(seed)
    rows: list[Row] = []
    for uid in _user_ids(rng, count):
        name = f"{rng.choice(NAMES)} {uid % 97}"
        email = _maybe(rng, f"u{uid}@example.{rng.choice(['com', 'org', 'net'])}", 0.15)
        country = _maybe(rng, rng.choice(COUNTRIES)[0], 0.1)
        signup = _maybe(rng, f"20{rng.randint(15, 24):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
        score = _maybe(rng, f"{rng.uniform(-50, 1000):.2f}", 0.1)
        active = rng.choice(["t", "f", None])
        tags = rng.choice([None, "{}", _array(["a"]), _array(["b", "a"]), _array(["x y", None]),
                           _array(["é", "a,b", 'q"t'])])
        rows.append((str(uid), name, email, country, signup, score, active, tags))
    return rows


def orders(seed: int = 2, user_rows: list[Row] | None = None, count: int = 1500) -> list[Row]:
    """Orders of the given users, plus some of users that do not exist (for outer joins)."""
    rng = random.Random(seed)
    uids = [int(r[0]) for r in (user_rows if user_rows is not None else users())]  # type: ignore[arg-type]
    uids += [100_001, 100_002, 100_003]
    seen: set[tuple[int, int]] = set()
    rows: list[Row] = []
    while len(rows) < count:
        uid = rng.choice(uids)
        oid = rng.randint(1, 100_000)
        if (uid, oid) in seen:
            continue
        seen.add((uid, oid))
        product = _maybe(rng, str(rng.randint(1, 55)), 0.05)  # 51..55 are not in products
        qty = str(rng.randint(1, 20))
        amount = _maybe(rng, f"{rng.uniform(0.5, 900):.2f}", 0.05)
        status = _maybe(rng, rng.choice(STATUSES), 0.05)
        at = (f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
              f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
              f"{rng.choice(['+00', '+02', '-05:30', '+09'])}")
        note = _maybe(rng, rng.choice(["gift", "urgent", "leave at door", "ça va"]), 0.8)
        rows.append((str(uid), str(oid), product, qty, amount, status, at, note))
    return rows


def products(seed: int = 3, count: int = 50) -> list[Row]:
    rng = random.Random(seed)
    return [(str(i), f"product {i}", rng.choice(CATEGORIES), _maybe(rng, f"{rng.uniform(1, 300):.2f}", 0.05),
             _maybe(rng, repr(rng.uniform(0.01, 30)), 0.1))
            for i in range(1, count + 1)]


def countries() -> list[Row]:
    return list(COUNTRIES)


SPECIAL_FLOATS = ["NaN", "Infinity", "-Infinity", "-0", "0", "1e-300", "1.5e300", "0.1", "3.14159265358979"]
SPECIAL_FLOAT4 = ["NaN", "Infinity", "-Infinity", "-0", "0", "1e-30", "3.4e38", "0.1"]
SPECIAL_NUMERIC = ["NaN", "0", "-0.000", "123456789012345678901234567890.123456789",
                   "1e-20", "-42", "3.50"]
SPECIAL_TS = ["0001-01-01 00:00:00", "9999-12-31 23:59:59.999999", "1999-12-31 23:59:59.999999",
              "2000-02-29 12:00:00"]


def _stamp(rng: random.Random) -> str:
    return f"2023-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 0{rng.randint(0, 9)}:30:{rng.randint(10, 59)}"


def alltypes(seed: int = 4, count: int = 200, first_key: int = 1) -> list[Row]:
    rng = random.Random(seed)
    rows: list[Row] = []
    for n in range(count):
        k = first_key + n * 37 if n % 10 else -(first_key + n)  # some negative keys
        null = rng.random() < 0.08  # a row of NULLs now and then
        row: list[str | None] = [
            str(k),
            str(rng.choice([-32768, 32767, 0, rng.randint(-1000, 1000)])),
            str(rng.choice([-2147483648, 2147483647, rng.randint(-10**6, 10**6)])),
            str(rng.choice([-(2**63), 2**63 - 1, rng.randint(-10**12, 10**12)])),
            rng.choice(SPECIAL_NUMERIC + [f"{rng.uniform(-1e6, 1e6):.6f}"] * 4),
            rng.choice(SPECIAL_FLOAT4 + [repr(rng.uniform(-100, 100))] * 4),
            rng.choice(SPECIAL_FLOATS + [repr(rng.uniform(-1e9, 1e9))] * 4),
            rng.choice(NAMES) * rng.randint(0, 3),
            rng.choice(NAMES)[:20],
            rng.choice(["a", "abcde", "", "é"]),
            rng.choice(["t", "f"]),
            rng.choice(["2024-02-29", "1970-01-01", "9999-12-31", "0001-01-01",
                        f"20{rng.randint(0, 30):02d}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"]),
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
            f".{rng.randint(0, 999999)}",
            rng.choice(SPECIAL_TS + [_stamp(rng)]),
            rng.choice(SPECIAL_TS + [_stamp(rng) + rng.choice(["+05", "-03:30", "+00"])]),
            rng.choice(["1 day", "-3 hours", "3 days 04:05:06.789", "0", "-1 day +02:00",
                        "00:00:00.000001"]),
            str(uuid.UUID(int=rng.getrandbits(128))),
            rng.choice(["\\x", "\\x00ff10", "\\xdeadbeef", "abc"]),
            rng.choice(['{"a": 1, "b": [1, 2, {"c": null}]}', "[]", '"str"', "3.5", "null",
                        '{"é": "ü", "nested": {"k": true}}', f'{{"n": {n}}}']),
            rng.choice(['{"b": 2, "a": 1}', '[1,  2]', '  {"dup": 1, "dup": 2}  ']),
            rng.choice(["{}", "{1,2,3}", "{NULL,5}", f"{{{n},{n * 2}}}", "{{1,2},{3,4}}"]),
            rng.choice(["{}", _array(["a", "b"]), _array([None, "x,y"]), _array(["", " "])]),
            rng.choice(["192.168.1.5", "10.0.0.0/8", "::1", "2001:db8::1/64", "127.0.0.1/32"]),
            rng.choice(["192.168.0.0/16", "10.1.2.0/24", "2001:db8::/32"]),
            rng.choice(["08:00:2b:01:02:03", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"]),
            format(rng.getrandbits(8), "08b"),
            rng.choice(["", "1", "101010", "1111000011110000"]),
            rng.choice(["empty", "[1,10)", "(,5]", "[3,)", "[-2,2]"]),
            rng.choice(["(1,2)", "(-1.5,3.25)", "(0,0)"]),
        ]
        if null:
            row = [row[0]] + [None] * (len(row) - 1)
        else:
            row = [row[0]] + [_maybe(rng, v, 0.07) for v in row[1:]]
        rows.append(tuple(row))
    return rows


def tags(seed: int = 5, count: int = 100) -> list[Row]:
    rng = random.Random(seed)
    words = sorted({f"{rng.choice(NAMES).lower()}-{rng.randint(0, 999)}" for _ in range(count * 2)})
    words = words[:count - 3]
    words += ["", "ünïcödé", "with space"]
    return [(w, _maybe(rng, str(rng.randint(0, 500))), _maybe(rng, f"2022-0{rng.randint(1, 9)}-01 10:00+00"))
            for w in words]


# Values PostgreSQL stores that Python's datetime and timedelta cannot hold: infinities, years before 1 or
# after 9999, 24:00, intervals counted in months.
EDGE_DATES = ["infinity", "-infinity", "0044-03-15 BC", "12000-01-01", "2024-02-29", None]
EDGE_TIMES = ["24:00:00", "00:00:00", "23:59:59.999999", None]
EDGE_TIMESTAMPS = ["infinity", "-infinity", "0044-03-15 12:00 BC", "12000-01-01 00:00", "2024-02-29 10:00",
                   None]
EDGE_TIMESTAMPTZ = ["infinity", "-infinity", "0044-03-15 12:00+00 BC", "12000-01-01 00:00-05",
                    "2024-02-29 10:00+02"]
EDGE_INTERVALS = ["1 mon", "1 year 2 mons 3 days 04:05:06.789", "-1 year", "P1Y2M", "30 days",
                  "-178000000 years", "1 mon -30 days", None]


def edge(seed: int = 12, count: int = 60) -> list[Row]:
    """Rows of table edge: (k, d date, t time, ts timestamp, tz timestamptz, i interval)."""
    rng = random.Random(seed)
    return [(str(k), rng.choice(EDGE_DATES), rng.choice(EDGE_TIMES), rng.choice(EDGE_TIMESTAMPS),
             _maybe(rng, rng.choice(EDGE_TIMESTAMPTZ), 0.2),
             rng.choice(EDGE_INTERVALS))
            for k in range(1, count + 1)]


def d_users(seed: int = 6, count: int = 200) -> list[Row]:
    return [r[:4] + (r[5] if r[5] is not None else "0", r[6] if r[6] is not None else "t")
            for r in users(seed, count)]


def d_orders(seed: int = 7, user_rows: list[Row] | None = None, count: int = 600) -> list[Row]:
    return [r[:7] for r in orders(seed, user_rows if user_rows is not None else d_users(), count)]


def d_products(seed: int = 8, count: int = 30) -> list[Row]:
    return [r[:2] + (r[3],) for r in products(seed, count)]


def d_types(seed: int = 9, count: int = 100) -> list[Row]:
    return alltypes(seed, count, first_key=1)


def g_log(seed: int = 11, count: int = 40) -> list[Row]:
    """Rows without a key, many of them duplicates."""
    rng = random.Random(seed)
    return [(_maybe(rng, str(rng.randint(1, 8))), rng.choice(["start", "stop", "é", None]),
             rng.choice(["2024-05-01 00:00+00", "2024-05-02 12:00+02", None]))
            for _ in range(count)]


def all_tables() -> dict[str, list[Row]]:
    """Every table's rows, in the order they are loaded."""
    u = users()
    du = d_users()
    return {
        "users": u,
        "orders": orders(user_rows=u),
        "products": products(),
        "countries": countries(),
        "alltypes": alltypes(),
        "tags": tags(),
        "d_users": du,
        "d_orders": d_orders(user_rows=du),
        "d_products": d_products(),
        "d_types": d_types(),
        "g_types": alltypes(10, 60, first_key=3),
        "g_log": g_log(),
        "edge": edge(),
        "g_edge": edge(13, 30),
    }
