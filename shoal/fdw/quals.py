"""What the planner tells a handler: column definitions, quals and sort keys.

The extension builds these objects; handlers only read them.  Names follow Multicorn's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, frozen=True)
class ColumnDefinition:
    """A column of the foreign table, as PostgreSQL declares it."""

    column_name: str
    attnum: int
    type_oid: int
    typmod: int
    type_name: str
    base_type_name: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Qual:
    """One restriction clause the extension can hand to the handler.

    A simple clause ``column <op> value`` has ``field_name``, ``operator`` and ``value``.  For
    ``column <op> ANY/ALL (array)`` (``IN`` lists) the operator is a tuple ``(op, True)`` for ANY and
    ``(op, False)`` for ALL, as in Multicorn, and ``value`` is a list.  ``IS NULL`` is ``('=', None)``
    and ``IS NOT NULL`` is ``('<>', None)``; a bare boolean column is ``('=', True)``.

    ``sql`` is the clause deparsed by PostgreSQL's ruleutils, with the table's own column names and
    ``$n`` placeholders numbered over the whole scan (values in :attr:`Quals.params`).  Clauses that
    are shippable but not of the simple form (``a + b > 3``, ``OR``) reach only handlers whose
    ``exact_quals`` is true, with ``field_name`` None.
    """

    field_name: str | None
    operator: str | tuple[str, bool] | None
    value: Any
    sql: str

    @property
    def is_list_operator(self) -> bool:
        return isinstance(self.operator, tuple)

    @property
    def list_any_or_all(self) -> str | None:
        if not isinstance(self.operator, tuple):
            return None
        return "ANY" if self.operator[1] else "ALL"


class Quals(list):
    """The quals of one scan: a list of :class:`Qual`, plus the scan-wide SQL and parameters.

    ``sql`` is every qual's SQL joined with AND (empty when there is none); ``params`` holds the
    values of ``$1``, ``$2``... and ``param_types`` their type OIDs.
    """

    __slots__ = ("params", "param_types")

    def __init__(self, quals=(), params=(), param_types=()) -> None:
        super().__init__(quals)
        self.params: list[Any] = list(params)
        self.param_types: list[int] = list(param_types)

    @property
    def sql(self) -> str:
        return " AND ".join(f"({q.sql})" for q in self)


@dataclass(slots=True, frozen=True)
class ParamValue:
    """The value of a qual at planning time (and in EXPLAIN) when it is known only at run time:
    a parameter of a prepared statement or the outer side of a nested loop (``$index``)."""

    index: int


@dataclass(slots=True, frozen=True)
class SortKey:
    """One key of the order the query wants, as in Multicorn."""

    attname: str
    attnum: int
    is_reversed: bool
    nulls_first: bool
    collate: str | None
