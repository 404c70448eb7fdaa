"""SQLite errors as Traffik errors: which ones mean "busy, try again", which an outage, and messages naming the file."""

from __future__ import annotations

import os
import sqlite3

from traffik.exceptions import BackendConnectionError, BackendError

__all__ = ["is_busy", "locked", "translate"]

_BUSY, _LOCKED = 5, 6
_CANTOPEN, _CORRUPT, _FULL, _IOERR, _NOTADB, _PERM, _READONLY = 14, 11, 13, 10, 26, 3, 8

_BY_MESSAGE = {
    # Python < 3.11 gives no error code: the primary code from SQLite's own message.
    "database is locked": _BUSY,
    "database table is locked": _LOCKED,
    "database schema is locked": _LOCKED,
    "unable to open database file": _CANTOPEN,
    "database disk image is malformed": _CORRUPT,
    "database or disk is full": _FULL,
    "file is not a database": _NOTADB,
    "file is encrypted or is not a database": _NOTADB,
    "attempt to write a readonly database": _READONLY,
    "disk I/O error": _IOERR,
}


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    return _BY_MESSAGE.get(str(exc))


def is_busy(exc: sqlite3.Error) -> bool:
    """True when another connection holds a lock the operation needs: retrying can succeed."""
    return _code(exc) in (_BUSY, _LOCKED)


def locked(path: str, timeout: float, doing: str) -> BackendConnectionError:
    """The error for a file whose lock stayed taken for the whole `timeout`."""
    return BackendConnectionError(
        f"SQLite file {path!r} stayed locked for {timeout:g}s while {doing}: another connection "
        "holds its write lock (a long transaction, or a tool that locks the whole file). Find "
        "and stop the holder, or give the backend a longer timeout="
    )


def translate(exc: sqlite3.Error, path: str, doing: str) -> BackendError:
    """A `BackendError` naming `path`, what was being done, and what to do about it: a
    `BackendConnectionError` (an outage, which an app starts through unless `fail_fast`)
    when the file cannot be opened or written for now; a file that is no database is a bad
    setting."""
    code = _code(exc)
    if code in (_NOTADB, _CORRUPT):
        return BackendError(
            f"SQLite file {path!r} is corrupt or not a database ({exc}) while {doing}: move it "
            "away (the backend creates a new one) or point the backend at another path",
            cause=exc,
        )
    if code == _CANTOPEN and os.path.isdir(path):
        return BackendConnectionError(
            f"cannot open SQLite file {path!r} ({exc}) while {doing}: it is a directory; "
            f"give the path of a file, such as {os.path.join(path, 'traffik.db')!r}",
            cause=exc,
        )
    if code == _CANTOPEN and path.startswith("~"):
        return BackendConnectionError(
            f"cannot open SQLite file {path!r} ({exc}) while {doing}: '~' is not expanded "
            f"(as in any path Python opens); give the full path, such as "
            f"{os.path.expanduser(path)!r}",
            cause=exc,
        )
    if code == _CANTOPEN:
        return BackendConnectionError(
            f"cannot open SQLite file {path!r} ({exc}) while {doing}: check that its directory "
            "exists and that this process may create and write files there",
            cause=exc,
        )
    if code in (_READONLY, _PERM):
        return BackendConnectionError(
            f"SQLite file {path!r} is read-only ({exc}) while {doing}: this process must be "
            "allowed to write the file, its directory and its -wal and -shm files",
            cause=exc,
        )
    if code == _FULL:
        return BackendError(
            f"SQLite file {path!r}: the disk is full ({exc}) while {doing}; free some space",
            cause=exc,
        )
    if code == _IOERR:
        return BackendError(
            f"SQLite file {path!r}: reading or writing it failed ({exc}) while {doing}: check "
            "the filesystem holding it (full, failing, unmounted), and that nothing deleted "
            "the file while in use and left its -wal and -shm files behind (delete all three "
            "with every worker stopped)",
            cause=exc,
        )
    return BackendError(f"SQLite file {path!r}: {exc} while {doing}", cause=exc)
