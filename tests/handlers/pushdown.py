"""A handler that enforces its quals exactly, sorts and limits: the pushdown tests' subject.

Its rows are those of a local table (option ``table``), read through ``_shoal_pg.query`` with the
quals' own SQL (``Quals.sql`` and ``Quals.params``), ORDER BY from the sort keys and LIMIT/OFFSET:
what a remote handler would send.  So results can be compared with the same query on the local
table, and every call is logged (option ``log``) so tests see what the planner pushed.
``path_keys`` (comma-separated columns) offers a parameterized path on those columns, ``rows``
overrides the row estimate.
"""

from __future__ import annotations

import re
from typing import Any

import _shoal_pg
from calllog import record

from shoal.fdw import ForeignDataWrapper
from shoal.fdw.convert import to_text

_type_names: dict[int, str] = {}


def _type_name(oid: int) -> str:
    if oid not in _type_names:
        _type_names[oid] = _shoal_pg.query("SELECT format_type($1::oid, NULL)", oid)[0][0]
    return _type_names[oid]


def _qual_tuple(q: Any) -> tuple[Any, Any, Any, str]:
    return (q.field_name, q.operator, q.value, q.sql)


class SqlTable(ForeignDataWrapper):
    exact_quals = True

    def __init__(self, options: dict[str, str], columns: dict) -> None:
        super().__init__(options, columns)
        self.table = options["table"]
        self.log = options.get("log")

    def _record(self, method: str, **data: Any) -> None:
        if self.log:
            record(self.log, method, **data)

    def get_rel_size(self, quals, columns):
        self._record("get_rel_size", quals=[_qual_tuple(q) for q in quals], columns=list(columns))
        if "rows" in self.options:
            return float(self.options["rows"]), 8 * max(len(columns), 1)
        (n,) = _shoal_pg.query(f"SELECT count(*) FROM {self.table}")[0]
        return float(max(n, 1)), 8 * max(len(columns), 1)

    def get_path_keys(self):
        if "path_keys" not in self.options:
            return []
        return [(self.options["path_keys"].split(","), 1.0)]

    def can_sort(self, sortkeys):
        self._record("can_sort", sortkeys=list(sortkeys))
        return list(sortkeys)

    def can_limit(self, limit, offset):
        self._record("can_limit", limit=limit, offset=offset)
        return True

    def _sql(self, quals, columns, sortkeys, limit, offset) -> tuple[str, list[Any]]:
        sql = f"SELECT {', '.join(columns)} FROM {self.table}"
        if quals:
            # Params arrive as Python values; query() passes text, so cast each $n to its type.
            where = re.sub(
                r"\$(\d+)",
                lambda m: f"(${m[1]}::{_type_name(quals.param_types[int(m[1]) - 1])})",
                quals.sql,
            )
            sql += f" WHERE {where}"
        if sortkeys:
            keys = []
            for k in sortkeys:
                key = k.attname
                if k.collate and k.collate != "default":
                    key += f' COLLATE "{k.collate}"'
                key += " DESC" if k.is_reversed else " ASC"
                key += " NULLS FIRST" if k.nulls_first else " NULLS LAST"
                keys.append(key)
            sql += " ORDER BY " + ", ".join(keys)
        if limit is not None:
            sql += f" LIMIT {limit}"
        if offset is not None:
            sql += f" OFFSET {offset}"
        params = [
            None if v is None else to_text(v, t)
            for v, t in zip(quals.params, quals.param_types, strict=True)
        ]
        return sql, params

    def execute(self, quals, columns, sortkeys=None, limit=None, offset=None):
        sql, params = self._sql(quals, columns, sortkeys, limit, offset)
        self._record("execute", quals=[_qual_tuple(q) for q in quals], params=list(quals.params),
                     columns=list(columns), sortkeys=sortkeys, limit=limit, offset=offset, sql=sql)
        return _shoal_pg.query(sql, *params)

    def explain(self, quals, columns, sortkeys=None, limit=None, offset=None, verbose=False):
        return {"Source": self.table}
