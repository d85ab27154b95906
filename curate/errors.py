"""One error family. Messages name the file, the row and the fix; the CLI prints them
without a traceback."""

from __future__ import annotations


class CurateError(Exception):
    """Base of every error curate raises for a user mistake or bad input.

    `CurateError(message, fix=..., path=..., row=...)` reads "path, row N: message" with a
    last line "  fix: ...". Every error has `.fix` (None when it gives none), also when the
    fix was written into the message as its "\n  fix: " line, so that callers of the
    Python API read the remedy the way the CLI prints it."""

    def __init__(self, message: str = "", *, path: str | None = None, row: int | None = None,
                 fix: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        text = where + str(message)
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)
        self.path, self.row = path, row
        self.fix = fix if fix else (text.partition("\n  fix: ")[2] or None)


class InputError(CurateError):
    """A file cannot be read as asked: unknown format, unreadable, bad option."""


class StoreError(CurateError):
    """The store is missing, locked by another writer, or not a curate store."""


class StoreBusyError(StoreError):
    """Another process holds the lock: transient, worth retrying (flows do)."""


class QueryError(CurateError):
    """A SQL query or filter expression failed."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM in the CLI. Not an Exception, so that no `except Exception`
    swallows it; it unwinds like KeyboardInterrupt: staged work is dropped, finished
    work stays committed."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.done: str | None = None  # what the command kept, for the message
