"""The one exception type the command line turns into a clear one-line message."""


class ShoalError(Exception):
    """A failure the user can act on: `message` says what went wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message
