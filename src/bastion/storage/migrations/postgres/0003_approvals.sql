-- Approvals: one row per held or pending-error call (state machine in bastion/approval/model.py),
-- changed only by compare-and-set on version; reviews are a JSON array on the row.
CREATE TABLE approvals (
    id               TEXT    PRIMARY KEY,
    subject          TEXT    NOT NULL,
    issuer           TEXT    NOT NULL,
    server           TEXT    NOT NULL,
    tool             TEXT    NOT NULL,
    arguments        TEXT    NOT NULL,
    arguments_sha256 TEXT    NOT NULL,
    rule_id          TEXT,
    policy_hash      TEXT    NOT NULL,
    caller_reason    TEXT,
    approver_groups  TEXT    NOT NULL,
    min_approvals    INTEGER NOT NULL,
    deny_min         INTEGER NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL,
    expires_at       DOUBLE PRECISION NOT NULL,
    held             BOOLEAN NOT NULL,
    holder           TEXT    NOT NULL,
    run_id           TEXT    NOT NULL,
    grant_s          DOUBLE PRECISION,
    state            TEXT    NOT NULL,
    reviews          TEXT    NOT NULL,
    closed_at        DOUBLE PRECISION,
    executed_at      DOUBLE PRECISION,
    version          INTEGER NOT NULL
);
CREATE INDEX approvals_binding ON approvals (subject, issuer, server, tool, arguments_sha256, policy_hash, state);
CREATE INDEX approvals_state_expires ON approvals (state, expires_at);
CREATE INDEX approvals_created ON approvals (created_at);

-- Time-box grants: a subject may call one tool under one policy hash until expires_at.
CREATE TABLE approval_grants (
    id          TEXT PRIMARY KEY,
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    subject     TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    server      TEXT NOT NULL,
    tool        TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX approval_grants_binding ON approval_grants (subject, issuer, server, tool, policy_hash, expires_at);
