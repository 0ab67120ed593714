-- API keys (identity/apikey.py): one row per key, the secret only as its SHA-256; times are POSIX seconds.
CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL CHECK (length(secret_sha256) = 32),
    subject       TEXT NOT NULL,
    group_names   TEXT NOT NULL,  -- JSON array of group names, sorted
    created_at    REAL NOT NULL,
    expires_at    REAL,
    revoked_at    REAL,
    last_used_at  REAL
) WITHOUT ROWID;

-- Tool pins (policy/pins.py): the approved definition of each upstream tool. approved_by is NULL
-- when the gateway pinned it itself (first use, or on_tool_change: allow).
CREATE TABLE tool_pins (
    server      TEXT NOT NULL,
    name        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    definition  TEXT NOT NULL,  -- JSON object of the pinned fields
    pinned_at   REAL NOT NULL,
    approved_by TEXT,
    PRIMARY KEY (server, name)
) WITHOUT ROWID;

-- Changed definitions waiting for an operator; approving one moves new_* into tool_pins.
CREATE TABLE tool_pin_changes (
    server         TEXT NOT NULL,
    name           TEXT NOT NULL,
    old_sha256     TEXT NOT NULL,
    old_definition TEXT NOT NULL,
    new_sha256     TEXT NOT NULL,
    new_definition TEXT NOT NULL,
    diff           TEXT NOT NULL,
    PRIMARY KEY (server, name)
) WITHOUT ROWID;
