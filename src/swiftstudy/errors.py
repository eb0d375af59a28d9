"""The one exception type for bad input (it names where the problem is), and ``first_line``, the
one-line message of any exception it wraps."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a file, a line in it, a key, and what is wrong.

    The CLI prints ``str(error)`` on one line and exits with status 2.

    Args:
        message: What is wrong, in words a user can act on.
        path: The file (or directory) the problem is in, if any.
        line: The 1-based line number in ``path``, if known.
        key: The field or key at fault (``sets.cot.path``, ``response``), if any.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.key = key
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.key is not None:
            where = f"{where}: {self.key}" if where else self.key
        return f"{where}: {self.message}" if where else self.message


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, for one-line errors."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
