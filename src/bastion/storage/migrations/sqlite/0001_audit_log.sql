-- Audit log: one append-only Merkle log per origin (records = leaves), its signed checkpoints
-- and the per-origin head (tree size + frontier) written in the same transaction as the leaves.
CREATE TABLE records (
    origin     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    time       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    body       BLOB    NOT NULL,
    leaf_hash  BLOB    NOT NULL,
    subject    TEXT,
    tool       TEXT,
    session_id TEXT,
    outcome    TEXT,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE INDEX records_time ON records (time);
CREATE INDEX records_subject_time ON records (subject, time) WHERE subject IS NOT NULL;
CREATE INDEX records_tool_time ON records (tool, time) WHERE tool IS NOT NULL;
CREATE INDEX records_session ON records (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX records_outcome_time ON records (outcome, time) WHERE outcome IS NOT NULL;
CREATE INDEX records_kind_time ON records (kind, time);

CREATE TABLE checkpoints (
    id        INTEGER PRIMARY KEY,
    origin    TEXT    NOT NULL,
    tree_size INTEGER NOT NULL,
    root_hash BLOB    NOT NULL,
    note      TEXT    NOT NULL,
    time      TEXT    NOT NULL
);
CREATE INDEX checkpoints_origin_size ON checkpoints (origin, tree_size, id);

CREATE TABLE log_heads (
    origin    TEXT    PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    frontier  BLOB    NOT NULL
);
