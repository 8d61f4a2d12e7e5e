"""The one error type the command line turns into a clear message instead of a stack trace."""


class AvwatchError(Exception):
    """A user-facing failure: the message names the input at fault and the fix.

    exit_code: the process exit status the command line uses for it.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
