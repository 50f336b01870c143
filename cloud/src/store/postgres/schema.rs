//! The PostgreSQL schema and its versioned migrations, applied under an advisory lock so
//! replicas that start together do not race.

use postgres::Client;

use crate::store::StoreError;

/// Key of the advisory lock migrations run under (any constant shared by every replica).
const MIGRATION_LOCK: i64 = 0x6865_6578_6d69_6772; // "heexmigr"

/// Every migration, in order: (version, description, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "workspaces, members, keys, invitations, audit, devices, labels, reports, console",
        r#"
-- Times are Unix seconds; text sorts and compares byte-wise (COLLATE "C"), as in the
-- SQLite store, so pages and cursors mean the same on both.
CREATE TABLE workspaces (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE members (
    id            TEXT COLLATE "C" PRIMARY KEY,
    workspace_id  TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at    BIGINT NOT NULL,
    removed_at    BIGINT
);
CREATE UNIQUE INDEX members_current_email ON members(workspace_id, email)
    WHERE removed_at IS NULL;
CREATE INDEX members_created ON members(workspace_id, created_at, id);

CREATE TABLE api_keys (
    id              TEXT COLLATE "C" PRIMARY KEY,
    workspace_id    TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    member_id       TEXT COLLATE "C" NOT NULL REFERENCES members(id),
    name            TEXT NOT NULL,
    scope           TEXT NOT NULL CHECK (scope IN ('enroll', 'admin')),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    last_used_at    BIGINT,
    revoked_at      BIGINT,
    revoked_by      TEXT COLLATE "C" REFERENCES members(id),
    revoked_reason  TEXT CHECK (revoked_reason IS NULL
                                OR revoked_reason IN ('revoked', 'rotated', 'member_removed')),
    replaced_by     TEXT COLLATE "C" REFERENCES api_keys(id),
    max_uses        BIGINT CHECK (max_uses IS NULL OR max_uses > 0),
    uses            BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_member ON api_keys(member_id);
CREATE INDEX api_keys_created ON api_keys(workspace_id, created_at, id);

-- Only the SHA-256 of an invitation token is stored; the token itself is shown once.
CREATE TABLE invitations (
    token_hash        TEXT PRIMARY KEY,
    id                TEXT COLLATE "C" NOT NULL UNIQUE,
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    email             TEXT NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    invited_by        TEXT COLLATE "C" NOT NULL REFERENCES members(id),
    accepted_at       BIGINT,
    accepted_by       TEXT COLLATE "C" REFERENCES members(id),
    cancelled_at      BIGINT,
    cancelled_by      TEXT COLLATE "C" REFERENCES members(id),
    cancelled_reason  TEXT
);
CREATE INDEX invitations_workspace ON invitations(workspace_id, created_at, id);
CREATE INDEX invitations_inviter ON invitations(invited_by);

CREATE TABLE audit_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    at            BIGINT NOT NULL,
    actor         TEXT COLLATE "C" NOT NULL,
    action        TEXT COLLATE "C" NOT NULL,
    target        TEXT COLLATE "C" NOT NULL,
    details       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_workspace ON audit_events(workspace_id, id);
CREATE INDEX audit_events_actor ON audit_events(workspace_id, actor, id);
CREATE INDEX audit_events_action ON audit_events(workspace_id, action, id);
CREATE INDEX audit_events_target ON audit_events(workspace_id, target, id);
CREATE INDEX audit_events_at ON audit_events(workspace_id, at);

CREATE TABLE devices (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    workspace_id          TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    name                  TEXT COLLATE "C" NOT NULL,
    labels                TEXT NOT NULL DEFAULT '{}',
    facts                 TEXT,
    spiffe_id             TEXT NOT NULL UNIQUE,
    enrolled_at           BIGINT NOT NULL,
    enrolled_by_key       TEXT COLLATE "C" NOT NULL REFERENCES api_keys(id),
    enrolled_by_member    TEXT COLLATE "C" NOT NULL REFERENCES members(id),
    cert_serial           TEXT NOT NULL,
    cert_expires_at       BIGINT NOT NULL,
    previous_cert_serial  TEXT,
    cert_superseded_at    BIGINT,
    revoked_at            BIGINT,
    last_seen_at          BIGINT,
    connection            TEXT,
    connected_at          BIGINT,
    agent_version         TEXT
);
CREATE INDEX devices_enrolled ON devices(workspace_id, enrolled_at, id);
CREATE INDEX devices_name ON devices(workspace_id, name, id);
CREATE INDEX devices_seen ON devices(workspace_id, COALESCE(last_seen_at, 0), id);
CREATE INDEX devices_connected ON devices(workspace_id, enrolled_at, id)
    WHERE connection IS NOT NULL;
CREATE INDEX devices_cert_expiry ON devices(workspace_id, cert_expires_at)
    WHERE revoked_at IS NULL;
CREATE INDEX devices_by_key ON devices(enrolled_by_key, enrolled_at, id);
CREATE INDEX devices_by_member ON devices(enrolled_by_member, enrolled_at, id);

CREATE TABLE device_labels (
    device_id     TEXT COLLATE "C" NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    workspace_id  TEXT COLLATE "C" NOT NULL,
    enrolled_at   BIGINT NOT NULL,
    key           TEXT COLLATE "C" NOT NULL,
    value         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (device_id, key)
);
CREATE INDEX device_labels_value
    ON device_labels(workspace_id, key, value, enrolled_at, device_id);

-- Stored once per (device, seq): a redelivery after a lost acknowledgement is harmless.
CREATE TABLE reports (
    device_id    TEXT COLLATE "C" NOT NULL,
    seq          BIGINT NOT NULL CHECK (seq > 0),
    received_at  BIGINT NOT NULL,
    payload      TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);

CREATE TABLE console_sessions (
    id_hash       TEXT PRIMARY KEY,
    key_id        TEXT COLLATE "C" NOT NULL REFERENCES api_keys(id),
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);

CREATE TABLE console_signin_tokens (
    token_hash  TEXT PRIMARY KEY,
    key_id      TEXT COLLATE "C" NOT NULL REFERENCES api_keys(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX console_signin_tokens_expiry ON console_signin_tokens(expires_at);
"#,
    ),
    (
        2,
        "the store's owner (CA and secret check) and replica leases",
        r#"
-- The CA fingerprint and a check value of the server secret of the data directory that
-- initialized the store: a replica whose data directory holds other ones refuses to start.
CREATE TABLE deployment (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    ca_fingerprint  TEXT NOT NULL,
    secret_check    TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
-- A gateway process holding sessions renews its lease every few seconds; the connection
-- marks (`<instance>-<n>`) of a process whose lease ended are cleared by the others.
CREATE TABLE replicas (
    instance     TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    lease_until  BIGINT NOT NULL
);
CREATE INDEX devices_connection ON devices(connection COLLATE "C")
    WHERE connection IS NOT NULL;
"#,
    ),
    (
        3,
        "trigram indexes for device search (when pg_trgm is available), revoked-device counts",
        r#"
-- Text search (`ILIKE '%…%'` on name and id) uses trigram indexes when the server has the
-- pg_trgm extension (PostgreSQL's contrib; a trusted extension, so the database owner may
-- create it); without it, search scans the workspace's devices, correct but slower.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'heex: pg_trgm cannot be created by this role; device search scans';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX devices_name_trgm ON devices USING gin (name gin_trgm_ops);
        CREATE INDEX devices_id_trgm ON devices USING gin (id gin_trgm_ops);
    END IF;
END
$$;
-- Each count of the summary is an index-only count.
CREATE INDEX devices_revoked ON devices(workspace_id) WHERE revoked_at IS NOT NULL;
"#,
    ),
    (
        4,
        "the CA that signed each device's certificate",
        r#"
-- Fingerprint of the CA that signed the device's current certificate, so a CA rotation
-- knows who still holds a certificate from the old CA. NULL: issued before it was recorded.
ALTER TABLE devices ADD COLUMN cert_ca TEXT;
"#,
    ),
    (
        5,
        "the CAs a rotation retired",
        r#"
-- A CA `heex-cloud ca retire` retired: a certificate it signs is never recorded again, so a
-- replica that has not yet reread its CA files cannot put a device back on it.
CREATE TABLE retired_cas (
    fingerprint  TEXT PRIMARY KEY,
    retired_at   BIGINT NOT NULL
);
"#,
    ),
    (
        6,
        "the public key of each device's certificate",
        r#"
-- SHA-256 (hex) of the device certificate's public key: a renewal repeated from the
-- certificate it superseded (the agent crashed before installing the answer) is answered
-- only for this same key. NULL: issued before it was recorded.
ALTER TABLE devices ADD COLUMN cert_key TEXT;
"#,
    ),
];

/// Brings the schema up to date, once across replicas: under an advisory lock, each
/// missing version in its own transaction. A database newer than this build is refused.
pub(super) fn migrate(c: &mut Client, now: i64) -> Result<(), StoreError> {
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = apply(c, now);
    let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result?;
    unlocked?;
    Ok(())
}

fn apply(c: &mut Client, now: i64) -> Result<(), StoreError> {
    // Checked first: CREATE TABLE IF NOT EXISTS would log a notice at every start.
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        c.batch_execute(
            "CREATE TABLE schema_version (
                 version     INTEGER PRIMARY KEY,
                 applied_at  BIGINT NOT NULL
             )",
        )?;
    }
    let current: i32 = c
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::Schema(format!(
            "the database has schema version {current}, newer than this heex-cloud knows \
             ({latest}); run a newer heex-cloud"
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let mut tx = c.transaction()?;
        tx.batch_execute(sql).map_err(|e| {
            StoreError::Schema(format!("migration {version} ({description}) failed: {e}"))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[version, &now],
        )?;
        tx.commit()?;
    }
    Ok(())
}
