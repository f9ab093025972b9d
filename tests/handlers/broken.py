"""A handler module that fails while being imported (the wrapper-not-importable tests)."""

raise RuntimeError("this handler module is broken on purpose")
