-- Warden policy service, SQLite. Keep in step with ../postgres/0001_init.sql.

CREATE TABLE documents (
    kind          TEXT    NOT NULL,
    tenant        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT '',
    shadow        BOOLEAN NOT NULL DEFAULT FALSE,
    revision      BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL,
    PRIMARY KEY (kind, tenant, id)
);

-- Snapshots are immutable: the triggers below refuse UPDATE and DELETE.
CREATE TABLE snapshots (
    seq           INTEGER PRIMARY KEY,
    hash          TEXT    NOT NULL,
    bundle        TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    created_by    TEXT    NOT NULL,
    reason        TEXT    NOT NULL
);

CREATE TABLE mode_changes (
    epoch         INTEGER PRIMARY KEY,
    global        TEXT    NOT NULL,
    tenants       TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL
);

CREATE TABLE approval_decisions (
    seq           INTEGER PRIMARY KEY,
    approval_id   TEXT    NOT NULL UNIQUE,
    decision      TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL
);

CREATE TABLE pending_approvals (
    approval_id   TEXT    PRIMARY KEY,
    sidecar_id    TEXT    NOT NULL,
    run_id        TEXT    NOT NULL,
    tenant        TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL
);

CREATE TABLE audit (
    seq           INTEGER PRIMARY KEY,
    at_ms         BIGINT  NOT NULL,
    actor         TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    before        TEXT    NOT NULL,
    after         TEXT    NOT NULL,
    critical      BOOLEAN NOT NULL,
    replica       TEXT    NOT NULL
);

CREATE TABLE sidecars (
    sidecar_id        TEXT    PRIMARY KEY,
    tenant            TEXT    NOT NULL,
    project           TEXT    NOT NULL,
    agent             TEXT    NOT NULL,
    version           TEXT    NOT NULL,
    snapshot          TEXT    NOT NULL,
    modes_epoch       BIGINT  NOT NULL,
    replica           TEXT    NOT NULL,
    connected         BOOLEAN NOT NULL,
    last_seen_ms      BIGINT  NOT NULL,
    unshipped_records BIGINT  NOT NULL,
    refused_snapshot  TEXT    NOT NULL
);

CREATE TABLE evidence (
    evidence_id    TEXT    PRIMARY KEY,
    sidecar_id     TEXT    NOT NULL,
    seq            BIGINT  NOT NULL,
    hash           TEXT    NOT NULL,
    prev           TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    chain_ok       BOOLEAN NOT NULL,
    run_id         TEXT    NOT NULL,
    received_at_ms BIGINT  NOT NULL
);
CREATE INDEX evidence_by_sidecar ON evidence (sidecar_id, seq);
CREATE INDEX evidence_by_run ON evidence (run_id);

CREATE TABLE chains (
    sidecar_id    TEXT    PRIMARY KEY,
    next_seq      BIGINT  NOT NULL,
    head_hash     TEXT    NOT NULL
);

CREATE TABLE chain_issues (
    seq           INTEGER PRIMARY KEY,
    sidecar_id    TEXT    NOT NULL,
    record_seq    BIGINT  NOT NULL,
    evidence_id   TEXT    NOT NULL,
    issue         TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL
);

-- Append-only tables: what was written is never changed or removed.
CREATE TRIGGER snapshots_no_update BEFORE UPDATE ON snapshots
BEGIN SELECT RAISE(ABORT, 'warden: snapshots are immutable'); END;
CREATE TRIGGER snapshots_no_delete BEFORE DELETE ON snapshots
BEGIN SELECT RAISE(ABORT, 'warden: snapshots are immutable'); END;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'warden: the audit ledger is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'warden: the audit ledger is append-only'); END;
CREATE TRIGGER mode_changes_no_update BEFORE UPDATE ON mode_changes
BEGIN SELECT RAISE(ABORT, 'warden: mode changes are append-only'); END;
CREATE TRIGGER mode_changes_no_delete BEFORE DELETE ON mode_changes
BEGIN SELECT RAISE(ABORT, 'warden: mode changes are append-only'); END;
CREATE TRIGGER approval_decisions_no_update BEFORE UPDATE ON approval_decisions
BEGIN SELECT RAISE(ABORT, 'warden: approval decisions are append-only'); END;
CREATE TRIGGER approval_decisions_no_delete BEFORE DELETE ON approval_decisions
BEGIN SELECT RAISE(ABORT, 'warden: approval decisions are append-only'); END;
CREATE TRIGGER evidence_no_update BEFORE UPDATE ON evidence
BEGIN SELECT RAISE(ABORT, 'warden: evidence is append-only'); END;
CREATE TRIGGER evidence_no_delete BEFORE DELETE ON evidence
BEGIN SELECT RAISE(ABORT, 'warden: evidence is append-only'); END;
