-- Warden policy service, PostgreSQL. Keep in step with ../sqlite/0001_init.sql.

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
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash          TEXT    NOT NULL,
    bundle        TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    created_by    TEXT    NOT NULL,
    reason        TEXT    NOT NULL
);

CREATE TABLE mode_changes (
    epoch         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    global        TEXT    NOT NULL,
    tenants       TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL
);

CREATE TABLE approval_decisions (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    body           BYTEA   NOT NULL,
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
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sidecar_id    TEXT    NOT NULL,
    record_seq    BIGINT  NOT NULL,
    evidence_id   TEXT    NOT NULL,
    issue         TEXT    NOT NULL,
    at_ms         BIGINT  NOT NULL
);

-- Append-only tables: what was written is never changed or removed.
CREATE FUNCTION warden_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden: % is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END
$$;
CREATE TRIGGER snapshots_append_only BEFORE UPDATE OR DELETE ON snapshots
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER snapshots_no_truncate BEFORE TRUNCATE ON snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER mode_changes_append_only BEFORE UPDATE OR DELETE ON mode_changes
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER mode_changes_no_truncate BEFORE TRUNCATE ON mode_changes
    FOR EACH STATEMENT EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER approval_decisions_append_only BEFORE UPDATE OR DELETE ON approval_decisions
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER approval_decisions_no_truncate BEFORE TRUNCATE ON approval_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER evidence_append_only BEFORE UPDATE OR DELETE ON evidence
    FOR EACH ROW EXECUTE FUNCTION warden_append_only();
CREATE TRIGGER evidence_no_truncate BEFORE TRUNCATE ON evidence
    FOR EACH STATEMENT EXECUTE FUNCTION warden_append_only();
