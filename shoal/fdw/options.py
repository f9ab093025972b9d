"""The options of ``shoal_fdw`` servers, tables and columns, and which handler they select.

Without a ``wrapper`` option a server is a shoal node and shoal's own remote-partition handler
serves its tables.  With one, the named class is the handler, and it may check its own options
through a ``validate_options(kind, options)`` classmethod.
"""

from __future__ import annotations

import importlib
import math

from shoal.fdw.handler import ForeignDataWrapper

DEFAULT_WRAPPER = "shoal.fdw.remote.RemotePartition"

_COSTS = ("startup_cost", "tuple_cost")
_BOOLEANS = {"true": True, "on": True, "yes": True, "1": True,
             "false": False, "off": False, "no": False, "0": False}
SHOAL_OPTIONS = {
    "wrapper": frozenset(),
    "server": frozenset({"wrapper", "node", "analyze", *_COSTS}),
    "table": frozenset({"wrapper", "table_name", "schema_name", "analyze", *_COSTS}),
    "column": frozenset({"column_name"}),
    "user mapping": frozenset(),
}


class OptionError(ValueError):
    """An invalid option, reported as SQLSTATE HV00D (invalid option name) or HV024 (value)."""

    def __init__(self, message: str, sqlstate: str = "HV024", hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint


def resolve_wrapper(path: str | None) -> type[ForeignDataWrapper]:
    """The handler class named ``package.module.Class``, or shoal's remote-partition handler."""
    path = path or DEFAULT_WRAPPER
    module_name, _, class_name = path.rpartition(".")
    if not module_name or not class_name:
        raise OptionError(
            f'wrapper "{path}" is not of the form package.module.Class',
            hint="Name the handler class with its full module path.",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OptionError(
            f'wrapper "{path}": cannot import module "{module_name}": {exc}',
            hint="Put the module on the server's Python path (GUC shoal.python_path).",
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise OptionError(f'wrapper "{path}": module "{module_name}" has no class "{class_name}"')
    if not isinstance(cls, type) or not issubclass(cls, ForeignDataWrapper):
        raise OptionError(
            f'wrapper "{path}" is not a subclass of shoal.fdw.ForeignDataWrapper',
        )
    return cls


def boolean_option(options: dict[str, str], name: str, default: bool = False) -> bool:
    """A boolean option's value, as PostgreSQL spells booleans (validated by validate_options)."""
    value = options.get(name)
    return default if value is None else _BOOLEANS.get(value.strip().lower(), default)


def validate_options(kind: str, options: dict[str, str]) -> None:
    """Check the options of one catalog object (``server``, ``table``, ``column``...)."""
    wrapper = options.get("wrapper")
    if wrapper is not None:
        cls = resolve_wrapper(wrapper)
        if "node" in options:
            raise OptionError('options "wrapper" and "node" exclude each other', sqlstate="HV00D")
        check = getattr(cls, "validate_options", None)
        if check is not None:
            check(kind, {k: v for k, v in options.items() if k != "wrapper"})
    elif kind == "server":
        # A shoal node server: every option must be one shoal knows.
        unknown = sorted(set(options) - SHOAL_OPTIONS["server"])
        if unknown:
            raise OptionError(
                f'invalid option "{unknown[0]}" for a shoal node server',
                sqlstate="HV00D",
                hint="Valid options: " + ", ".join(sorted(SHOAL_OPTIONS["server"])) + ".",
            )
    for name in _COSTS:
        if name in options:
            try:
                value = float(options[name])
            except ValueError:
                value = -1.0
            if not (value >= 0 and math.isfinite(value)):  # NaN and infinity are no costs
                raise OptionError(f'option "{name}" must be a non-negative number, not "{options[name]}"')
    if "analyze" in options and options["analyze"].strip().lower() not in _BOOLEANS:
        raise OptionError(f'option "analyze" must be a boolean, not "{options["analyze"]}"')
    for name in ("node", "table_name", "schema_name", "column_name"):
        if name in options and not options[name]:
            raise OptionError(f'option "{name}" must not be empty')
