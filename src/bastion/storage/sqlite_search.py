"""Filing committed SQLite records into ``search_index``, behind the durable commits (migration 0006).

The commit an audited call waits for writes the record and the head only; the writer thread
files afterwards, on a connection that does not wait for the disk. Filing copies rows from
``records`` up to a seq and moves the origin's watermark in ``search_filed`` to it, in one
transaction: since an origin's records are contiguous, everything at or below a committed seq is
committed, so the filed rows of an origin are always exactly those up to its watermark, whichever
process wrote them. A search reads ``search_index`` and, past each watermark, ``records`` itself
(``_sql.search_filed_sql``), so it never depends on filing having happened, and reads on past
index rows that have no record (``search``). Verify checks that invariant (``indexed_page``): the
index rows are copies of their records, every record at or below the watermark has one, and
every index row has its record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
import time

from bastion.audit.entry import LogEntry
from bastion.storage import _sql
from bastion.storage.base import (
    IndexedEntry,
    RecordQuery,
    SearchColumns,
    SearchCursor,
    SearchIndexRow,
    StrayIndexRow,
    VerifiedRow,
)

log = logging.getLogger(__name__)

FILE_AFTER_QUIET_S = 0.002
"""How long the writer waits with no write queued before it files. Filing at once would hold the
GIL just as the event loop wakes to release the callers of the commit before."""
FILE_RECORDS_UNDER_LOAD = 256
"""Unfiled records at which the writer, when writes keep coming, files inside its next durable
commit: a transaction of its own would take the write lock once more, and with several
processes on one file each extra take starves one of them in SQLite's busy sleeps."""
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 30.0

UNFILED_SQL = (
    "SELECT h.origin, h.tree_size - 1, h.tree_size - 1 - coalesce(f.through, -1)"
    " FROM log_heads AS h LEFT JOIN search_filed AS f ON f.origin = h.origin"
    " WHERE h.tree_size - 1 > coalesce(f.through, -1)"
)
FILE_SQL = (
    "INSERT OR IGNORE INTO search_index (origin, seq, time, kind, subject, tool, session_id, outcome)"
    " SELECT origin, seq, time, kind, subject, tool, session_id, outcome FROM records"
    " WHERE origin = ?1 AND seq > coalesce((SELECT through FROM search_filed WHERE origin = ?1), -1) AND seq <= ?2"
)
ADVANCE_SQL = (
    "INSERT INTO search_filed (origin, through) VALUES (?1, ?2)"
    " ON CONFLICT (origin) DO UPDATE SET through = excluded.through WHERE excluded.through > search_filed.through"
)


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLite's "database is busy" (any of its extended codes)."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


class SearchFiler:
    """What the writer thread has committed but not filed, and the filing itself; writer thread only.

    ``conn`` files when writes pause. Apart from the writer's own connection it should not wait
    for a lock (``busy_timeout`` 0): when another process writes, filing waits for the next pause
    or rides in a durable commit instead of holding up this process's commits.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._through: dict[str, int] = {}
        """Per origin, the highest committed seq not yet filed."""
        self._records = 0
        """About how many records that is (for when to file under load)."""
        self._retry_at = 0.0
        self._backoff_s = 0.0

    def find_unfiled(self) -> None:
        """Take up what earlier writers left unfiled (a crash loses filing, which is not durable).

        Raises:
            sqlite3.Error: the database cannot be read.
        """
        for origin, through, count in self._conn.execute(UNFILED_SQL):
            self._note(origin, through, count)

    def committed(self, origin: str, tree_size: int, records: int) -> None:
        """Note a committed batch that left ``origin`` at ``tree_size``."""
        self._note(origin, tree_size - 1, records)

    def _note(self, origin: str, through: int, records: int) -> None:
        self._through[origin] = max(through, self._through.get(origin, -1))
        self._records += records

    def wait_s(self) -> float | None:
        """How long the writer may wait for its next job before filing; None: nothing to file."""
        if not self._through:
            return None
        return max(FILE_AFTER_QUIET_S, self._retry_at - time.monotonic())

    @property
    def due_under_load(self) -> bool:
        """Whether to file now although writes are queued."""
        return self._records >= FILE_RECORDS_UNDER_LOAD and time.monotonic() >= self._retry_at

    def file(self) -> None:
        """File everything noted in a transaction of its own; on failure keep it (searches do not need it)."""
        if not self._through:
            return
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._insert(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not is_busy(exc):  # busy: another process is writing; the next pause tries again
                self._back_off(exc)
            return
        self.filed()

    def file_within(self, conn: sqlite3.Connection) -> bool:
        """File everything noted inside ``conn``'s open transaction; True if it did.

        Call ``filed`` once that transaction has committed: until then the notes stay (a failed
        commit undoes the filing, and the watermark with it). A filing failure leaves the
        transaction as it was, so the records it holds still commit.

        Raises:
            sqlite3.Error: the failure ended the whole transaction (SQLite does on some I/O and
                memory errors); the caller's commit has failed.
        """
        try:
            conn.execute("SAVEPOINT filing")
            self._insert(conn)
            conn.execute("RELEASE filing")
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                raise
            # Should undoing fail too, rows past a watermark would commit; searches merge the two
            # parts with UNION, and the next filing (OR IGNORE) moves the watermark over them.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK TO filing")
                conn.execute("RELEASE filing")
            self._back_off(exc)
            return False
        return True

    def _insert(self, conn: sqlite3.Connection) -> None:
        for origin, through in self._through.items():
            conn.execute(FILE_SQL, (origin, through))
            conn.execute(ADVANCE_SQL, (origin, through))

    def filed(self) -> None:
        """Forget the notes: everything in them is filed (``file_within``'s transaction committed)."""
        self._through.clear()
        self._records = 0
        self._backoff_s = 0.0

    def _back_off(self, exc: sqlite3.Error) -> None:
        self._backoff_s = min(RETRY_MAX_S, max(RETRY_FIRST_S, 2 * self._backoff_s))
        self._retry_at = time.monotonic() + self._backoff_s
        log.warning("cannot file %d audit records into the search index (searches still find them);"
                    " next try in %.1f s: %s", self._records, self._backoff_s, exc)


def search(conn: sqlite3.Connection, query: RecordQuery) -> list[LogEntry]:
    """The records matching ``query``, newest first, at most ``query.limit``.

    Index rows without a record (forged, or left by a deletion; verify reports them) would take
    places within the limit and shorten the page. Only when they did is the rest of the page read
    from past the last candidate with the index joined to the records first (``checked``): that
    costs a probe of ``records`` per index row read, which an intact index never pays. One read
    transaction, so both reads see one snapshot.

    Raises:
        StorageError: ``query.limit`` is outside 1..``MAX_SEARCH_LIMIT``.
        sqlite3.Error: the database cannot be read.
    """
    conn.execute("BEGIN")
    try:
        rows = conn.execute(*_sql.search_filed_sql(query)).fetchall()
        found = [_sql.entry_from_row(row) for row in rows if not row[7]]
        if len(found) == len(rows) or len(rows) < query.limit:
            return found
        last = rows[-1]
        rest = dataclasses.replace(query, after=SearchCursor(last[6], last[0], last[1]), limit=query.limit - len(found))
        return found + [_sql.entry_from_row(row) for row in conn.execute(*_sql.search_filed_sql(rest, checked=True))]
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


_COPIED = ("time", "kind", "subject", "tool", "session_id", "outcome")
_A_COPY, _UNFILED, _HIDDEN, _NOT_A_COPY = 0, 1, 2, 3
"""What a record's page row says of its index row: a copy of the record's row (time, kind,
search columns); none, and searches read the record; none, and searches read only the index;
one that is not a copy."""
INDEXED_PAGE_SQL = (
    # The index row is compared with the record's row here, so that only one that differs reaches
    # Python: the verifier compares the record's row with the body. Searches read only the index
    # at or below the watermark, or when the origin has no head row (_sql.search_filed_sql).
    f"SELECT {', '.join(f'r.{column}' for column in _sql.RECORD_COLUMNS.split(', '))},"
    f" CASE WHEN i.seq IS NOT NULL THEN"
    f" CASE WHEN {' AND '.join(f'i.{column} IS r.{column}' for column in _COPIED)} THEN {_A_COPY} ELSE {_NOT_A_COPY} END"
    " WHEN r.seq <= coalesce((SELECT through FROM search_filed WHERE origin = ?1), -1)"
    f" OR NOT EXISTS (SELECT 1 FROM log_heads WHERE origin = ?1) THEN {_HIDDEN} ELSE {_UNFILED} END"
    " FROM records AS r LEFT JOIN search_index AS i ON i.origin = r.origin AND i.seq = r.seq"
    " WHERE r.origin = ?1 AND r.seq >= ?2 ORDER BY r.seq LIMIT ?3"
)
INDEX_ROWS_SQL = f"SELECT seq, {', '.join(_COPIED)} FROM search_index WHERE origin = ?1 AND seq >= ?2 AND seq <= ?3"
COUNT_INDEX_ROWS_SQL = (
    # Counts at most ?4 rows, so a range holding many index rows costs no more than a page.
    "SELECT count(*) FROM (SELECT 1 FROM search_index WHERE origin = ?1 AND seq >= ?2 AND seq <= ?3 LIMIT ?4)"
)
STRAYS_SQL = (
    "SELECT seq FROM search_index AS i WHERE origin = ?1 AND seq >= ?2 AND seq <= ?3"
    " AND NOT EXISTS (SELECT 1 FROM records AS r WHERE r.origin = ?1 AND r.seq = i.seq) ORDER BY seq LIMIT ?4"
)
MAX_SEQ = 2**63 - 1
"""SQLite's largest integer: the upper bound of the last page's range."""


def indexed_page(conn: sqlite3.Connection, origin: str, from_seq: int, limit: int) -> tuple[list[VerifiedRow], int | None]:
    """Up to ``limit`` records of ``origin`` from ``from_seq`` on with their index rows, then the
    stray index rows of the page's range; and where the next page starts (None: this is the last).

    A range holding more than ``limit`` stray rows ends at the ``limit``-th of them, and the page
    holds only the records up to it: a page never holds more than ``limit`` of either, however
    many rows were forged into the index, and the next page goes on from there. (Not when that
    stray's seq is a forged REAL: a page from ``last + 1`` would skip what lies right after it, so
    the page holds all of its range's strays.)

    One read transaction, so one snapshot: filing and pruning change a record's index row and the
    watermark together, and no page sees one half of that.
    """
    conn.execute("BEGIN")
    try:
        return _indexed_page(conn, origin, from_seq, limit)
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _indexed_page(conn: sqlite3.Connection, origin: str, from_seq: int, limit: int) -> tuple[list[VerifiedRow], int | None]:
    rows = conn.execute(INDEXED_PAGE_SQL, (origin, from_seq, limit)).fetchall()
    last = rows[-1][1] if len(rows) == limit else MAX_SEQ
    states = [row[10] for row in rows]
    # Strays are looked for only when the range holds more index rows than matched a record: a
    # count of a key range, where looking for them probes ``records`` once per index row. An index
    # row matches a record of the range only, so the range holds a stray exactly when it holds
    # more than ``matched`` index rows; counting stops there.
    strays: list[int] = []
    matched = len(states) - states.count(_UNFILED) - states.count(_HIDDEN)
    if conn.execute(COUNT_INDEX_ROWS_SQL, (origin, from_seq, last, matched + 1)).fetchone()[0] != matched:
        strays = [seq for (seq,) in conn.execute(STRAYS_SQL, (origin, from_seq, last, limit))]
        if len(strays) == limit and strays[-1] < last:  # maybe more: the range ends at the last one read
            if isinstance(strays[-1], int):
                last = strays[-1]
                # Records past it come on a later page; a seq stored as TEXT or BLOB sorts after
                # every number (the range holds numbers only).
                while rows and not (isinstance(rows[-1][1], int | float) and rows[-1][1] <= last):
                    rows.pop()
                del states[len(rows):]
            else:  # a forged REAL seq: a page from ``last + 1`` would skip what lies right after it
                strays = [seq for (seq,) in conn.execute(STRAYS_SQL, (origin, from_seq, last, -1))]
    entries = [
        IndexedEntry(_sql.entry_from_row(row), SearchColumns(row[6], row[7], row[8], row[9]), None, row[10] == _HIDDEN)
        for row in rows
    ]
    if _NOT_A_COPY in states:  # tampered: read those index rows
        found = {row[0]: SearchIndexRow(*row[1:]) for row in conn.execute(INDEX_ROWS_SQL, (origin, from_seq, last))}
        for at, state in enumerate(states):
            if state == _NOT_A_COPY:
                entries[at] = entries[at]._replace(index_row=found[rows[at][1]])
    page: list[VerifiedRow] = list(entries)
    page += [StrayIndexRow(origin, seq) for seq in strays]
    return page, (last + 1 if last != MAX_SEQ else None)
