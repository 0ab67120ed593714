-- The search indexes move out of the durable commit. records keeps its primary key only, so an
-- audited call's commit writes the record and the head and nothing else; the writer thread then
-- files committed records into search_index, in a transaction of its own that does not wait for
-- the disk (storage/sqlite_search.py). search_filed holds each origin's watermark: its records up
-- to that seq are filed, the rest not yet. A search reads search_index and, past the watermark,
-- records itself, so no committed record is missing from a search while filing lags or after a
-- crash lost it. Measured: docs/performance.md. Index names and predicates as in 0001 and 0005.
CREATE TABLE search_index (
    origin     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    time       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    subject    TEXT,
    tool       TEXT,
    session_id TEXT,
    outcome    TEXT,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE TABLE search_filed (
    origin  TEXT    PRIMARY KEY,
    through INTEGER NOT NULL
);
INSERT INTO search_index (origin, seq, time, kind, subject, tool, session_id, outcome)
    SELECT origin, seq, time, kind, subject, tool, session_id, outcome FROM records;
INSERT INTO search_filed (origin, through) SELECT origin, tree_size - 1 FROM log_heads WHERE tree_size > 0;
DROP INDEX records_time;
DROP INDEX records_subject_time;
DROP INDEX records_tool_time;
DROP INDEX records_session;
DROP INDEX records_rare_outcome_time;
DROP INDEX records_rare_kind_time;
CREATE INDEX search_index_time ON search_index (time);
CREATE INDEX search_index_subject_time ON search_index (subject, time) WHERE subject IS NOT NULL;
CREATE INDEX search_index_tool_time ON search_index (tool, time) WHERE tool IS NOT NULL;
CREATE INDEX search_index_session ON search_index (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX search_index_rare_outcome_time ON search_index (outcome, time) WHERE outcome <> 'ok';
CREATE INDEX search_index_rare_kind_time ON search_index (kind, time) WHERE kind NOT IN ('request', 'response', 'notification');
