"""One SQLite file shared by threads and processes: connections and transactions.

Both SQLite stores (jobs, transfer sessions) use this: a small pool of connections
in WAL mode, ``BEGIN IMMEDIATE`` write transactions (so SQLite's single writer lock
makes each operation atomic across processes), and driver errors translated to
:class:`~sclib.errors.BackendError` once, here.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from sclib.errors import (
    BackendError,
    ConfigurationError,
    InsufficientStorage,
    SclibError,
)

__all__ = ["SYNC_MODES", "SQLiteDatabase", "SQLiteFileStore"]

SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteDatabase:
    """A SQLite file with a schema, pooled connections and write transactions.

    :param synchronous: SQLite's ``synchronous`` pragma. ``"NORMAL"`` in WAL mode
        survives any process crash; ``"FULL"`` also survives power loss.
    :param busy_timeout: seconds a write waits for the lock before failing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 10.0,
        added_columns: Sequence[tuple[str, str, str]] = (),
        after_columns: str = "",
    ) -> None:
        text = os.fspath(path)
        if not text or text == ":memory:":
            raise ConfigurationError(
                "sclib needs a SQLite file path: an in-memory database cannot be "
                "shared between threads and processes"
            )
        if synchronous.upper() not in SYNC_MODES:
            raise ConfigurationError(
                f"synchronous must be one of {', '.join(SYNC_MODES)}, got "
                f"{synchronous!r}"
            )
        self.path = Path(text)
        self.synchronous = synchronous.upper()
        self.busy_timeout = busy_timeout
        # pooled, not per thread: a worker runs each job in a fresh thread, and a
        # connection per thread would leak one per job
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._max_idle = 8
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the folder for the database {self.path}: {exc}"
            ) from exc
        try:
            with self._conn() as conn:
                conn.executescript(schema)
                self._add_columns(conn, added_columns)
                if after_columns:
                    conn.executescript(after_columns)
        except sqlite3.Error as exc:
            raise self.error(exc, "cannot create tables in") from exc

    @staticmethod
    def _add_columns(
        conn: sqlite3.Connection, columns: Sequence[tuple[str, str, str]]
    ) -> None:
        """Add the ``(table, column, declaration)`` columns a file made by an
        older sclib lacks (``ALTER TABLE ... ADD COLUMN``, in one transaction;
        two processes upgrading one file at once both find it done)."""
        if not columns:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, column, declaration in columns:
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    conn.execute(
                        f"ALTER TABLE {table} ADD COLUMN {column} {declaration}"
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def __repr__(self) -> str:
        return f"SQLiteDatabase({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise BackendError(f"the database {self.path} is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            raise self.error(exc, "cannot open the database") from exc
        return conn

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """Borrow a pooled connection for one operation."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self._closed and len(self._idle) < self._max_idle
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite errors become :class:`BackendError`."""
        with self._conn() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self.error(exc) from exc
            try:
                yield conn
            except BaseException as exc:
                self._rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise self.error(exc) from exc
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback(conn)
                    raise self.error(exc) from exc

    def error(self, exc: sqlite3.Error, what: str = "database") -> SclibError:
        """A driver error as sclib's: a full disk is :class:`InsufficientStorage`
        (nothing was written; retry once space is freed), anything else a
        :class:`BackendError`."""
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return InsufficientStorage(
                f"{what} {self.path}: the disk is full; nothing was written, "
                "retry once space is freed"
            )
        return BackendError(f"{what} {self.path}: {exc}")

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Roll back if a transaction is still open; SQLite may already have rolled
        it back itself (disk full, I/O error), and that must not hide the error."""
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run one query outside a write transaction."""
        try:
            with self._conn() as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.error(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._idle = self._idle, []
        for conn in conns:
            conn.close()


class SQLiteFileStore:
    """What every store kept in one SQLite file shares: the database opened with
    the class's ``SCHEMA``, a ``repr`` naming the file, and ``close``."""

    SCHEMA: ClassVar[str] = ""
    #: ``(table, column, declaration)`` added to files made before the column was
    #: (``SCHEMA`` has them for new files)
    ADDED_COLUMNS: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    #: SQL run once the added columns exist (their indexes)
    AFTER_COLUMNS: ClassVar[str] = ""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 10.0,
    ) -> None:
        self.db = SQLiteDatabase(
            path,
            self.SCHEMA,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            added_columns=self.ADDED_COLUMNS,
            after_columns=self.AFTER_COLUMNS,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.db.path)!r})"

    def close(self) -> None:
        self.db.close()
