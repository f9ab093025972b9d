"""The one exception type the command line turns into a clear one-line message."""


class ShoalError(Exception):
    """A failure the user can act on: `message` says what went wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SqlError(Exception):
    """An error raised inside a backend that reads as an ordinary SQL error: `sqlstate` (e.g.
    42P01), the message, and an optional detail and hint."""

    sqlstate = "XX000"

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None,
                 sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.detail = detail
        if sqlstate is not None:
            self.sqlstate = sqlstate

    def __str__(self) -> str:
        return self.args[0]


class FeatureNotSupported(SqlError):
    sqlstate = "0A000"


class InvalidParameter(SqlError):
    sqlstate = "22023"


class UndefinedObject(SqlError):
    sqlstate = "42704"


class ObjectInUse(SqlError):
    sqlstate = "55006"


class InvalidDefinition(SqlError):
    sqlstate = "42P16"
