"""The Python foreign-data-wrapper API that the shoal extension hosts.

A handler is a subclass of :class:`ForeignDataWrapper`, named by the server or table option
``wrapper 'package.module.Class'``.  The vocabulary follows Multicorn's so that its users feel at
home; the binary fast path, exact quals and the two-phase hooks are shoal's additions.
"""

from shoal.fdw.handler import ForeignDataWrapper
from shoal.fdw.quals import ColumnDefinition, ParamValue, Qual, Quals, SortKey

__all__ = [
    "ColumnDefinition",
    "ForeignDataWrapper",
    "ParamValue",
    "Qual",
    "Quals",
    "SortKey",
]
