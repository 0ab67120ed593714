"""SQL text shared by the SQLite and PostgreSQL stores, parametrised by placeholder style.

Owns the column lists and the search query builder; connections, transactions and error
translation stay in each store module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bastion.audit.entry import LogEntry, StoredCheckpoint
from bastion.errors import HeadConflictError, StorageError
from bastion.storage.base import (
    MAX_SEARCH_LIMIT,
    AppendBatch,
    IndexedEntry,
    RecordQuery,
    SearchColumns,
    check_batch,
    pack_frontier,
)

Placeholder = Callable[[int], str]
"""Maps a 1-based parameter position to its marker: ``?n`` for sqlite3, ``$n`` for asyncpg."""
T = TypeVar("T")

ENTRY_COLUMNS = "origin, seq, time, kind, body, leaf_hash"
CHECKPOINT_COLUMNS = "origin, tree_size, root_hash, note, time"
"""The columns of ``AppendRows.checkpoints``' tuples, in order."""
CHECKPOINT_WIDTH = CHECKPOINT_COLUMNS.count(",") + 1


def qmark(position: int) -> str:
    """sqlite3 placeholder, numbered (``?NNN``) so that a statement may use its parameters out of order."""
    return f"?{position}"


def dollar(position: int) -> str:
    """asyncpg placeholder."""
    return f"${position}"


RECORD_COLUMNS = "origin, seq, time, kind, body, leaf_hash, subject, tool, session_id, outcome"
"""The columns of ``AppendRows.records``' tuples, in order."""
RECORD_WIDTH = RECORD_COLUMNS.count(",") + 1


def _origins_sql(tables: tuple[str, ...]) -> str:
    """Every origin in ``log_heads`` or in one of ``tables``, sorted (both dialects).

    A loose index scan per table: each step seeks the next origin in the table's index on
    ``origin``, so listing costs one seek per origin, not a read of every row.
    """
    scans = [
        f" {table}_origins(origin) AS (SELECT (SELECT origin FROM {table} ORDER BY origin LIMIT 1)"
        f" UNION ALL SELECT (SELECT origin FROM {table} WHERE origin > p.origin ORDER BY origin LIMIT 1)"
        f" FROM {table}_origins AS p WHERE p.origin IS NOT NULL)"
        for table in tables
    ]
    unions = "".join(f" UNION SELECT origin FROM {table}_origins WHERE origin IS NOT NULL" for table in tables)
    return f"WITH RECURSIVE{','.join(scans)} SELECT origin FROM log_heads{unions} ORDER BY origin"


ORIGINS_SQL = _origins_sql(("records", "checkpoints"))
"""Every origin with a head, a record or a checkpoint, sorted. Heads alone would not do: a lost
head row must not hide a log from verify."""
SQLITE_ORIGINS_SQL = _origins_sql(("records", "checkpoints", "search_index"))
"""SQLite: ``ORIGINS_SQL``, and the origins of ``search_index`` rows too. Rows filed under an
origin that has nothing else stored are found by verify only if it walks that origin."""


@functools.cache  # built once per shape: the stores ask for it on every batch
def insert_records_sql(ph: Placeholder, rows: int = 1) -> str:
    """INSERT of ``rows`` record rows, parameters row after row."""
    values = ", ".join(
        "(" + ", ".join(ph(r * RECORD_WIDTH + i) for i in range(1, RECORD_WIDTH + 1)) + ")" for r in range(rows)
    )
    return f"INSERT INTO records ({RECORD_COLUMNS}) VALUES {values}"


@functools.cache  # built once per shape: the store asks for it on every batch
def append_batch_arrays_sql(*, first: bool) -> str:
    """PostgreSQL: a whole batch as one statement, so one round trip and, outside a transaction
    block, one implicit transaction (no BEGIN and COMMIT round trips).

    Parameters: ``AppendRows.head_row`` ($1-$4), then one array per record column ($5-$14, the
    records transposed), then one per checkpoint column ($15-$19). Records and checkpoints are inserted
    only when the head moved (``RETURNING`` is how a data-modifying WITH passes that on); the
    statement returns how many heads moved, 0 or 1.
    """
    record_types = ("text", "bigint", "text", "text", "bytea", "bytea", "text", "text", "text", "text")
    checkpoint_types = ("text", "bigint", "bytea", "text", "text")
    records = ", ".join(f"${5 + i}::{t}[]" for i, t in enumerate(record_types))
    checkpoints = ", ".join(f"${5 + RECORD_WIDTH + i}::{t}[]" for i, t in enumerate(checkpoint_types))
    return (
        f"WITH head AS ({advance_head_sql(dollar, first=first)} RETURNING 1),"
        f" new_records AS (INSERT INTO records ({RECORD_COLUMNS})"
        f" SELECT * FROM unnest({records}) WHERE EXISTS (SELECT FROM head)),"
        f" new_checkpoints AS (INSERT INTO checkpoints ({CHECKPOINT_COLUMNS})"
        f" SELECT {CHECKPOINT_COLUMNS} FROM unnest({checkpoints}) WITH ORDINALITY"
        f" AS c({CHECKPOINT_COLUMNS}, position) WHERE EXISTS (SELECT FROM head) ORDER BY position)"
        " SELECT count(*) FROM head"
    )


@functools.cache  # built once per shape: the store asks for it on every batch
def append_one_record_sql(*, first: bool) -> str:
    """PostgreSQL: ``append_batch_arrays_sql`` for the commonest batch, one record and no
    checkpoint, with the record's columns as plain parameters ($5-$14); about 13 % quicker per commit
    (no arrays to build and unnest, no checkpoint insert to plan). The command tag says whether
    the head moved: ``INSERT 0 1`` when it did, ``INSERT 0 0`` when another writer had moved it.
    """
    values = ", ".join(f"${5 + i}" for i in range(RECORD_WIDTH))
    return (
        f"WITH head AS ({advance_head_sql(dollar, first=first)} RETURNING 1)"
        f" INSERT INTO records ({RECORD_COLUMNS}) SELECT {values} WHERE EXISTS (SELECT FROM head)"
    )


@functools.cache  # built once per shape: the stores ask for it on every batch
def insert_checkpoint_sql(ph: Placeholder) -> str:
    """INSERT for one checkpoint row."""
    return f"INSERT INTO checkpoints ({CHECKPOINT_COLUMNS}) VALUES ({', '.join(ph(i) for i in range(1, 6))})"


@functools.cache  # built once per shape: the stores ask for it on every batch
def advance_head_sql(ph: Placeholder, *, first: bool) -> str:
    """Move an origin's head to ``AppendRows.head_row``'s values only from the tree size given 4th.

    One statement is both the optimistic check and the write: when another writer has moved the
    head, no row changes. ``first``: the batch expects tree size 0, where the row may not exist yet
    (or holds the head of a log that so far has only a checkpoint).
    """
    if first:
        return (
            f"INSERT INTO log_heads (origin, tree_size, frontier) VALUES ({ph(1)}, {ph(2)}, {ph(3)})"
            " ON CONFLICT (origin) DO UPDATE SET tree_size = excluded.tree_size, frontier = excluded.frontier"
            f" WHERE log_heads.tree_size = {ph(4)}"
        )
    return f"UPDATE log_heads SET tree_size = {ph(2)}, frontier = {ph(3)} WHERE origin = {ph(1)} AND tree_size = {ph(4)}"


@dataclass(frozen=True, slots=True)
class AppendRows:
    """An ``AppendBatch`` as SQL parameters, built once when it is queued.

    Batches queued while an earlier one commits are merged: when each continues the one before
    (same origin, its expected tree size is the other's new one), one head move and one INSERT
    store them all, and they share one outcome.
    """

    origin: str
    previous_size: int
    tree_size: int
    frontier: bytes
    records: list[tuple[Any, ...]]
    """Parameter tuples for ``insert_records_sql``, columns as ``RECORD_COLUMNS``."""
    checkpoints: list[tuple[Any, ...]]
    """Parameter tuples for ``insert_checkpoint_sql``, columns as ``CHECKPOINT_COLUMNS``."""

    @classmethod
    def of(cls, batch: AppendBatch) -> AppendRows:
        """The batch's parameters; search columns from the batch, else from each body.

        Raises:
            StorageError: the batch is malformed (see ``check_batch``) or a body is not a JSON object.
        """
        check_batch(batch)
        columns = batch.columns or tuple(SearchColumns.from_body(e.body) for e in batch.entries)
        records = [
            (e.origin, e.seq, e.time, e.kind, e.body, e.leaf_hash, c.subject, c.tool, c.session_id, c.outcome)
            for e, c in zip(batch.entries, columns, strict=True)
        ]
        checkpoints = [(c.origin, c.tree_size, c.root_hash, c.note, c.time) for c in batch.checkpoints]
        head = batch.head
        return cls(head.origin, batch.previous_size, head.tree_size, pack_frontier(head.frontier), records, checkpoints)

    def head_row(self) -> tuple[Any, ...]:
        """Parameter tuple for ``advance_head_sql``: the new head, then the tree size it moves from."""
        return (self.origin, self.tree_size, self.frontier, self.previous_size)

    def conflict(self, stored: int | None) -> HeadConflictError:
        """The error for rows whose expected tree size is not the stored one."""
        return HeadConflictError(f"origin {self.origin!r} is at tree size {stored or 0}, batch expects {self.previous_size}")


def merge_queued(queued: Sequence[tuple[AppendRows, T]]) -> list[tuple[AppendRows, list[T]]]:
    """Merge each run of queued batches that continue one another; keep the order and each one's tag."""
    runs: list[list[tuple[AppendRows, T]]] = []
    for rows, tag in queued:
        if runs:
            last = runs[-1][-1][0]
            if rows.origin == last.origin and rows.previous_size == last.tree_size:
                runs[-1].append((rows, tag))
                continue
        runs.append([(rows, tag)])
    merged = []
    for run in runs:
        rows = run[0][0]
        if len(run) > 1:
            last = run[-1][0]
            records = [record for part, _ in run for record in part.records]
            checkpoints = [checkpoint for part, _ in run for checkpoint in part.checkpoints]
            rows = AppendRows(rows.origin, rows.previous_size, last.tree_size, last.frontier, records, checkpoints)
        merged.append((rows, [tag for _, tag in run]))
    return merged


COMMON_OUTCOMES = frozenset({"ok"})
COMMON_KINDS = frozenset({"request", "response", "notification"})
RARE_OUTCOME_PREDICATE = "outcome <> 'ok'"
RARE_KIND_PREDICATE = "kind NOT IN ('request', 'response', 'notification')"
"""The WHERE clauses of the partial indexes of migration 0005 (and, on SQLite, 0006), word for word:
a planner uses a partial index only when the query carries its predicate, and cannot infer it
from ``kind = ?``. Each starts with its column, so a table qualifier can be put in front."""


def search_sql(query: RecordQuery, ph: Placeholder) -> tuple[str, list[Any]]:
    """PostgreSQL: SELECT of the records matching every filter of ``query``, newest first.

    Raises:
        StorageError: ``query.limit`` is outside 1..``MAX_SEARCH_LIMIT``.
    """
    terms, params = _search_terms(query, ph)
    where = _where(terms, "")
    params.append(query.limit)
    sql = f"SELECT {ENTRY_COLUMNS} FROM records{where} ORDER BY time DESC, origin, seq DESC LIMIT {ph(len(params))}"
    return sql, params


def search_filed_sql(query: RecordQuery, *, checked: bool = False) -> tuple[str, list[Any]]:
    """SQLite: SELECT of the first ``query.limit`` candidates for ``query``, newest first, through
    ``search_index``: each as ``ENTRY_COLUMNS`` of its record, then the time it was found by (with
    its origin and seq, a cursor past it) and whether no record is stored for it (1; then all its
    record columns but origin and seq are NULL).

    Records are filed into ``search_index`` after their commit (migration 0006,
    storage/sqlite_search.py), so a search also reads each origin's records past its filing
    watermark (a short run, or what a crash left unfiled), filtering on the records' own copies
    of the columns. An index row with no record takes a place within the limit and comes with
    NULL record columns, unless ``checked``: then index rows are joined with their records before
    the limit, which probes ``records`` for every index row a plan reads, all of an origin's
    matches when the plan sorts them (``sqlite_search.search`` says when).

    Raises:
        StorageError: ``query.limit`` is outside 1..``MAX_SEARCH_LIMIT``.
    """
    terms, params = _search_terms(query, qmark)
    params.append(query.limit)
    limit = qmark(len(params))
    order = "time DESC, {0}origin, {0}seq DESC"
    # CROSS JOIN keeps search_index outside, so its indexes still choose the plan.
    join = " CROSS JOIN records AS x ON x.origin = i.origin AND x.seq = i.seq" if checked else ""
    filed = (
        f"SELECT i.origin, i.seq, i.time FROM search_index AS i{join}{_where(terms, 'i.')}"
        f" ORDER BY i.{order.format('i.')} LIMIT {limit}"
    )
    unfiled = (
        # CROSS JOIN keeps the origins outside: a range of each one's primary key, not a scan of records.
        "SELECT t.origin, t.seq, t.time FROM log_heads AS h CROSS JOIN records AS t ON t.origin = h.origin"
        " AND t.seq > coalesce((SELECT f.through FROM search_filed AS f WHERE f.origin = h.origin), -1)"
        f"{_where(terms, 't.')} ORDER BY t.{order.format('t.')} LIMIT {limit}"
    )
    sql = (
        # UNION, not UNION ALL: the parts never overlap, unless a failed filing could not be undone
        # (storage/sqlite_search.py); deduplicating at most twice the limit costs nothing. The
        # ENTRY_COLUMNS take origin and seq from the candidate: an index row with no record has them too.
        "SELECT m.origin, m.seq, r.time, r.kind, r.body, r.leaf_hash, m.time, r.seq IS NULL"
        f" FROM (SELECT * FROM ({filed}) UNION SELECT * FROM ({unfiled})) AS m"
        f" LEFT JOIN records AS r ON r.origin = m.origin AND r.seq = m.seq ORDER BY m.{order.format('m.')} LIMIT {limit}"
    )
    return sql, params


def _search_terms(query: RecordQuery, ph: Placeholder) -> tuple[list[str], list[Any]]:
    """The filters of ``query`` as conditions whose columns read ``{q}column`` (for ``_where`` to
    qualify), and their parameters.

    Raises:
        StorageError: ``query.limit`` is outside 1..``MAX_SEARCH_LIMIT``.
    """
    if not 1 <= query.limit <= MAX_SEARCH_LIMIT:
        raise StorageError(f"a search returns 1..{MAX_SEARCH_LIMIT} records, not {query.limit}")
    filters = [
        ("origin", "=", query.origin),
        ("subject", "=", query.subject),
        ("tool", "=", query.tool),
        ("session_id", "=", query.session_id),
        ("outcome", "=", query.outcome),
        ("kind", "=", query.kind),
        ("time", ">=", query.time_from),
        ("time", "<", query.time_to),
    ]
    terms: list[str] = []
    params: list[Any] = []
    for column, op, value in filters:
        if value is not None:
            params.append(value)
            terms.append(f"{{q}}{column} {op} {ph(len(params))}")
    if query.outcome is not None and query.outcome not in COMMON_OUTCOMES:
        terms.append("{q}" + RARE_OUTCOME_PREDICATE)
    if query.kind is not None and query.kind not in COMMON_KINDS:
        terms.append("{q}" + RARE_KIND_PREDICATE)
    if query.after is not None:
        params += [query.after.time, query.after.origin, query.after.seq]
        time, origin, seq = (ph(len(params) - i) for i in (2, 1, 0))
        # Past the cursor in the result order (time DESC, origin, seq DESC). The first condition
        # alone bounds the time index; the second settles records of the cursor's own time.
        terms.append(
            f"{{q}}time <= {time} AND ({{q}}time < {time} OR {{q}}origin > {origin}"
            f" OR ({{q}}origin = {origin} AND {{q}}seq < {seq}))"
        )
    return terms, params


def _where(terms: list[str], qualifier: str) -> str:
    return f" WHERE {' AND '.join(term.format(q=qualifier) for term in terms)}" if terms else ""


def _stored_bytes(value: Any) -> Any:
    """A BLOB/bytea column as bytes; a value of another type (the row was rewritten outside the
    writer, e.g. SQLite ``CAST(body AS TEXT)``) is passed on unchanged for the verifier to report."""
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value


def entry_from_row(row: Any) -> LogEntry:
    """Build a LogEntry from a row selected with ``ENTRY_COLUMNS``."""
    return LogEntry(
        origin=row[0], seq=row[1], time=row[2], kind=row[3], body=_stored_bytes(row[4]), leaf_hash=_stored_bytes(row[5])
    )


def indexed_entry_from_row(row: Any) -> IndexedEntry:
    """Build an IndexedEntry from a row selected with ``RECORD_COLUMNS``, whose own search columns
    are all that searches read (PostgreSQL)."""
    return IndexedEntry(entry_from_row(row), SearchColumns(row[6], row[7], row[8], row[9]), None, False)


def checkpoint_from_row(row: Any) -> StoredCheckpoint:
    """Build a StoredCheckpoint from a row selected with ``CHECKPOINT_COLUMNS``."""
    return StoredCheckpoint(origin=row[0], tree_size=row[1], root_hash=bytes(row[2]), note=row[3], time=row[4])
