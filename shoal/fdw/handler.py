"""The base class of every handler hosted by ``shoal_fdw``.

The extension calls these methods; a handler overrides what it supports.  Planning methods run
once per plan, ``execute`` once per scan (again on rescan), the modification methods once per row
(``modify_directly`` once per statement) and the transaction callbacks at the transaction's
boundaries, for every handler the transaction used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shoal.fdw.quals import ColumnDefinition, Quals, SortKey

Row = Mapping[str, Any] | Sequence[Any]
"""A row from ``execute``: a mapping of column name to value, or a sequence of values."""


class ForeignDataWrapper:
    """Base class of Python foreign-data wrappers (Multicorn's names, shoal's additions).

    ``execute`` yields, in any mix:

    * a mapping ``{column name: value}``;
    * a sequence of values, either one per requested column (the ``columns`` argument, which is in
      table order) or one per column of the table;
    * ``bytes``-like PostgreSQL binary COPY tuple data (the fast path): any number of tuples, each
      an int16 field count followed by int32-length-prefixed values in binary format, with the
      same field layout as a sequence row.  A COPY header and trailer are accepted; a tuple may be
      split across chunks.  The extension decodes it in C with each column's receive function.
    """

    #: True when ``execute`` enforces every qual it is given.  The extension then gives it every
    #: shippable clause (not only the simple ones), does not re-check them, and may push LIMIT down.
    exact_quals: bool = False

    #: True to get constants, like values known only at run time, as ``$n`` in each qual's ``sql``
    #: (their values in ``quals.params``): the SQL of a statement's quals is then the same
    #: whatever the values, so a plan cache keyed by the SQL serves every execution.
    constants_as_params: bool = False

    #: Rows per call of ``bulk_insert`` for INSERT and COPY (1 = one ``insert`` per row).
    batch_size: int = 1

    def __init__(self, options: dict[str, str], columns: dict[str, ColumnDefinition]) -> None:
        self.options = options
        self.columns = columns

    # -- planning -------------------------------------------------------------------------------

    def get_rel_size(self, quals: Quals, columns: list[str]) -> tuple[float, int]:
        """Estimated (rows, bytes per row) of a scan with these quals."""
        return 1000.0, 100 * max(len(columns), 1)

    def get_path_keys(self) -> Iterable[tuple[Sequence[str], float]]:
        """``(columns, rows)`` pairs: an equality on these columns returns about ``rows`` rows.

        Each pair lets the planner build a parameterized path (a nested loop pushing the outer
        value down into this scan).
        """
        return ()

    def can_sort(self, sortkeys: list[SortKey]) -> list[SortKey]:
        """The prefix of ``sortkeys`` that ``execute`` will honour."""
        return []

    def can_limit(self, limit: int | None, offset: int | None) -> bool:
        """Whether ``execute`` will apply this LIMIT and OFFSET itself (only asked for exact quals)."""
        return False

    # -- scanning -------------------------------------------------------------------------------

    def execute(
        self,
        quals: Quals,
        columns: list[str],
        sortkeys: list[SortKey] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Iterable[Row | bytes]:
        """Return the rows of one scan (see the class docstring for what a row may be).

        The extension calls this when the scan starts and reads the iterable as the executor
        pulls; work done before returning the iterable starts remote requests early.
        """
        raise TypeError(f"{type(self).__name__} does not implement execute()")

    def explain(
        self,
        quals: Quals,
        columns: list[str],
        sortkeys: list[SortKey] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        verbose: bool = False,
    ) -> Iterable[str] | Mapping[str, str]:
        """Lines (or label -> text) that EXPLAIN shows for this scan."""
        return ()

    #: True: ``ANALYZE`` samples this table through ``analyze_size`` and ``analyze_sample``
    #: (otherwise PostgreSQL skips it with a warning, and leaves it out of its partitioned parent's
    #: statistics).
    can_analyze = False

    def analyze_size(self) -> tuple[float, float] | None:
        """The table's size in pages and rows (estimates will do): the pages decide its share of
        its parent's sample, ANALYZE records the rows.  None: skip the table this time."""
        raise TypeError(f"{type(self).__name__} does not implement analyze_size()")

    def analyze_sample(self, columns: list[str], rows: int) -> tuple[float, Iterable[Row | bytes]]:
        """The table's number of rows, and a random sample of them (as ``execute`` returns rows,
        ``columns`` only): about ``rows`` of them, each equally likely; the extension keeps
        ``rows`` of what comes, each equally likely too (reservoir sampling)."""
        raise TypeError(f"{type(self).__name__} does not implement analyze_sample()")

    # -- modification ---------------------------------------------------------------------------

    @property
    def rowid_column(self) -> str | None:
        """The column that identifies a row for UPDATE and DELETE; None makes the table read-only
        for those commands."""
        return None

    def insert(
        self, values: dict[str, Any], clause_values: list[Any] | None = None
    ) -> Mapping[str, Any] | None:
        """Insert one row; return the row as stored (for RETURNING), or None for ``values``.

        For an ``INSERT ... ON CONFLICT DO UPDATE`` (see ``upsert``), ``clause_values`` are the values of
        the clause's parameters for this row, and the row returned is the one inserted or updated
        (``b""`` when the clause's WHERE left an existing row alone)."""
        raise TypeError(f"{type(self).__name__} does not support INSERT")

    def bulk_insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert several rows (``batch_size`` > 1); RETURNING never uses this path."""
        for values in rows:
            self.insert(values)

    def update(self, rowid: Any, newvalues: dict[str, Any]) -> Mapping[str, Any] | None:
        """Update the row whose ``rowid_column`` is ``rowid``; return the new row or None."""
        raise TypeError(f"{type(self).__name__} does not support UPDATE")

    def delete(self, rowid: Any) -> Mapping[str, Any] | None:
        """Delete the row whose ``rowid_column`` is ``rowid``; return the old row or None."""
        raise TypeError(f"{type(self).__name__} does not support DELETE")

    #: True: insert/update get every value, and a scan's ``quals.params`` every parameter, as a str
    #: in its type's text form (exact for every type, where Python objects are not: infinite dates,
    #: intervals with months, ranges, JSON text...), printed in the styles every node parses back
    #: (ISO dates, whatever this session's DateStyle).  Each ``Qual.value`` stays a Python object.
    text_values = False

    #: True: an UPDATE or DELETE whose quals this handler enforces (``exact_quals``) and whose new
    #: values the other side can compute may run whole through ``modify_directly``, instead of a
    #: scan for the rows' ``rowid_column`` followed by ``update``/``delete`` per row.
    direct_modify = False

    #: True: rows of an ``INSERT ... ON CONFLICT DO UPDATE`` may come here.  ``begin_modify`` then gets
    #: ``on_conflict="update"`` and ``conflict_update``: a dict with ``set`` (column -> SQL of its new
    #: value), ``where`` (SQL or None), ``alias`` (the name the SQL gives the existing row; the proposed
    #: one is ``excluded``) and ``types`` (type OIDs of the parameters ``$n`` the SQL uses, numbered after
    #: the row's values, whose values come to ``insert`` as ``clause_values``).
    upsert = False

    def modify_directly(
        self, operation: str, quals: Quals, assignments: dict[str, str], returning: list[str] | None
    ) -> int | Iterable[bytes]:
        """Run ``operation`` (``UPDATE`` or ``DELETE``) on the rows the quals select, in one go.

        ``assignments`` maps each column an UPDATE sets to its new value's SQL, deparsed like a
        qual's (the table's columns by name, ``$n`` for values in ``quals.params``).  Without
        ``returning``, return the number of rows modified; with it (the table's columns), return
        binary tuple data of those columns of each row modified, as stored or as deleted.
        """
        raise TypeError(f"{type(self).__name__} does not implement modify_directly()")

    def explain_modify(
        self, operation: str, quals: Quals, assignments: dict[str, str], returning: list[str] | None,
        verbose: bool = False,
    ) -> Iterable[str] | Mapping[str, str]:
        """Lines (or label -> text) that EXPLAIN shows for ``modify_directly``."""
        return ()

    def begin_modify(
        self, operation: str, on_conflict: str | None = None, conflict_update: dict[str, Any] | None = None
    ) -> None:
        """A statement starts modifying this table (``INSERT``, ``UPDATE``, ``DELETE``; COPY and
        tuple routing are ``INSERT``).  ``on_conflict="nothing"``: an ``INSERT ... ON CONFLICT DO
        NOTHING``, whose rows that conflict are skipped (``insert`` then returns ``b""``).  It is
        passed only then, so handlers without it refuse such inserts.  ``on_conflict="update"``
        comes with ``conflict_update`` (see ``upsert``)."""

    def end_modify(self) -> None:
        """The statement has sent its last row."""

    # -- transactions ---------------------------------------------------------------------------

    def begin(self, serializable: bool) -> None:
        """First use of this handler in a transaction."""

    def pre_commit(self) -> None:
        """Before the local commit; raising aborts the transaction."""

    def commit(self) -> None:
        """After the local commit (errors are logged as warnings: it cannot be undone)."""

    def rollback(self) -> None:
        """After the local abort."""

    def pre_prepare(self, gid: str | None) -> None:
        """Before PREPARE TRANSACTION; raising aborts the transaction."""

    def prepare(self, gid: str | None) -> None:
        """After the transaction was prepared locally."""

    def sub_begin(self, level: int) -> None:
        """A savepoint (subtransaction) at nesting ``level`` started."""

    def sub_commit(self, level: int) -> None:
        """The savepoint at ``level`` was released."""

    def sub_rollback(self, level: int) -> None:
        """The transaction rolled back to the savepoint at ``level``."""
