"""HammerDB's TPROC-C consistency checks (TPC-C's consistency conditions 1-4), run after a test through
the first node; each one counts the warehouses or districts that break it, so 0 everywhere is a pass."""

from __future__ import annotations

from typing import Any

import psycopg

CHECKS: dict[str, tuple[str, str]] = {
    "w_ytd = sum(d_ytd)": (
        "per warehouse, W_YTD equals the sum of its districts' D_YTD",
        """SELECT count(*) FROM warehouse w
             JOIN (SELECT d_w_id, sum(d_ytd) AS s FROM district GROUP BY d_w_id) d ON d.d_w_id = w.w_id
            WHERE w.w_ytd <> d.s""",
    ),
    "d_next_o_id - 1 = max(o_id) = max(no_o_id)": (
        "per district, the last order id equals D_NEXT_O_ID - 1, in orders and in new_order",
        """SELECT count(*) FROM district d
             LEFT JOIN (SELECT o_w_id, o_d_id, max(o_id) AS m FROM orders GROUP BY 1, 2) o
                    ON o.o_w_id = d.d_w_id AND o.o_d_id = d.d_id
             LEFT JOIN (SELECT no_w_id, no_d_id, max(no_o_id) AS m FROM new_order GROUP BY 1, 2) n
                    ON n.no_w_id = d.d_w_id AND n.no_d_id = d.d_id
            WHERE o.m IS DISTINCT FROM d.d_next_o_id - 1 OR n.m IS DISTINCT FROM d.d_next_o_id - 1""",
    ),
    "new_order contiguous": (
        "per district, the undelivered order ids have no gap: count = max - min + 1",
        """SELECT count(*) FROM (SELECT no_w_id, no_d_id FROM new_order GROUP BY 1, 2
                                 HAVING count(*) <> max(no_o_id) - min(no_o_id) + 1) AS gaps""",
    ),
    "sum(o_ol_cnt) = count(order_line)": (
        "per district, the order lines announced by the orders are all there",
        """SELECT count(*) FROM (SELECT o_w_id, o_d_id, sum(o_ol_cnt) AS s FROM orders GROUP BY 1, 2) o
             FULL JOIN (SELECT ol_w_id, ol_d_id, count(*) AS c FROM order_line GROUP BY 1, 2) l
                    ON l.ol_w_id = o.o_w_id AND l.ol_d_id = o.o_d_id
            WHERE o.s IS DISTINCT FROM l.c""",
    ),
}


def run(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Every check: {"checks": {name: {"what", "violations" or "error"}}, "passed": bool}."""
    results: dict[str, Any] = {}
    for name, (what, query) in CHECKS.items():
        try:
            violations = int(conn.execute(query).fetchone()[0])
            results[name] = {"what": what, "violations": violations}
        except psycopg.Error as exc:
            results[name] = {"what": what, "error": (str(exc).strip().splitlines() or ["?"])[0]}
    passed = all(r.get("violations") == 0 for r in results.values())
    return {"checks": results, "passed": passed}
