"""The error types the command line turns into a clear message instead of a stack trace."""
from __future__ import annotations

from pathlib import Path


class AvwatchError(Exception):
    """A user-facing failure: the message names the input at fault and the fix.

    exit_code: the process exit status the command line uses for it.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class OptionError(AvwatchError):
    """A bad option value. The library names the option by its field (`segment_s must be ...`); the command
    line, which knows which flag set that field, names the flag instead (`renamed("--segment")`)."""

    def __init__(self, option: str, problem: str, exit_code: int = 2):
        super().__init__(f"{option} {problem}", exit_code)
        self.option, self.problem = option, problem

    def renamed(self, name: str) -> AvwatchError:
        return AvwatchError(f"{name} {self.problem}", self.exit_code)


def no_table(sink: str | Path, name: str, path: str | Path) -> AvwatchError:
    """The error for a sink folder without the Delta table `name` (looked for at `path`)."""
    return AvwatchError(f"no {name} table under {Path(sink)} (looked in {path}); run `avwatch analyze "
                        f"MEDIA --sink {sink}` or the stream job first")
