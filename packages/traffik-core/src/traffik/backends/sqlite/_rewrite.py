"""`RewritingCursor`: a row read, changed in Python and written back by one `UPDATE`, with no transaction of several statements around it.

A decision made as `BEGIN IMMEDIATE`, `SELECT`, `UPDATE`, `COMMIT` runs four statements;
most of their cost is the statements themselves, not the work. SQLite makes one statement
atomic on its own, and an `UPDATE` takes the write lock before it reads the row, so a
decision on a row that exists can be one statement: the `UPDATE` calls back into Python
(`traffik_value` and `traffik_expires`, functions of the old value and expiry) for the row's
new value and expiry, worked out once by the change the caller gave (`rewrite`). The
change runs with the write lock held, so the time it reads is after every write before it,
as a transaction's `now` is. A change that leaves a row as it was writes nothing (SQLite
skips a record rewritten identical). When there is no row, nothing runs: the caller
decides in a transaction instead (a new row is where the cap and the sweep come in).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Optional

__all__ = ["MISSING", "Change", "RewritingCursor"]

_REWRITE = (
    "UPDATE traffik_entries SET value = traffik_value(value, expires_at), "
    "expires_at = traffik_expires(value, expires_at) WHERE key = ?"
)

MISSING = object()
"""What `rewrite` answers when there is no row to change."""

Change = Callable[[str, Optional[int]], tuple[str, Optional[int], Any]]
"""`change(value, expires_at) -> (new value, new expires_at, answer)`: the row's new content
(the same, to leave it) and what `rewrite` answers; made once per throttle's strategy, rate
and cost (`traffik.backends.sqlite._decisions`)."""


class RewritingCursor(sqlite3.Cursor):
    """A cursor whose connection has the rewriting functions (made by `connection.cursor`
    with this class; one per connection, see the module)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection)
        self._change: Optional[Change] = None
        self._new: Optional[tuple[str, Optional[int], Any]] = None
        self._error: Optional[BaseException] = None
        connection.create_function("traffik_value", 2, self._value)
        connection.create_function("traffik_expires", 2, self._expires)

    def rewrite(self, key: str, change: Change) -> Any:
        """`change(value, expires_at)` on `key`'s row (expired or not) in one `UPDATE`: its
        answer, or `MISSING` when there is no row. An error the change raises is raised
        here, and the statement fails (the row is left as it was).

        Args:
            key: The row's key.
            change: What the row becomes, and the answer (see `Change`).

        Returns:
            The change's answer, or `MISSING`.
        """
        self._change = change
        try:
            self.execute(_REWRITE, (key,))
        except sqlite3.OperationalError:
            if self._error is None:
                raise
        finally:
            new, error = self._new, self._error
            self._change = self._new = self._error = None
        if error is not None:
            raise error
        return MISSING if new is None else new[2]

    def _changed(self, value: str, expires_at: Optional[int]) -> tuple[str, Optional[int], Any]:
        """The change made (once per statement: the first function SQLite calls makes it)."""
        change = self._change
        if change is None:  # (an UPDATE not made by `rewrite`: it fails)
            raise sqlite3.ProgrammingError("traffik_value is only called by rewrite()")
        try:
            new = self._new = change(value, expires_at)
        except BaseException as exc:  # the statement fails; `rewrite` raises this
            self._error = exc
            raise
        return new

    def _value(self, value: str, expires_at: Optional[int]) -> str:
        new = self._new
        return (self._changed(value, expires_at) if new is None else new)[0]

    def _expires(self, value: str, expires_at: Optional[int]) -> Optional[int]:
        new = self._new
        return (self._changed(value, expires_at) if new is None else new)[1]
