//! Versioned schema migrations of the SQLite store.
//!
//! Migrations form an ordered list; each runs once, in its own transaction, and records its
//! version in `schema_version`. Never edit a released migration: append a new one.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// One schema step.
#[derive(Debug)]
pub struct Migration {
    /// Version reached after this step; versions start at 1 and increase by one.
    pub version: i64,
    /// What the step does.
    pub description: &'static str,
    /// The SQL run in the step's transaction.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "workspaces, members, API keys, devices",
        sql: r#"
CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at    INTEGER NOT NULL,
    removed_at    INTEGER
);
CREATE UNIQUE INDEX members_current_email ON members(workspace_id, email)
    WHERE removed_at IS NULL;

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    member_id     TEXT NOT NULL REFERENCES members(id),
    name          TEXT NOT NULL,
    scope         TEXT NOT NULL CHECK (scope IN ('enroll', 'admin')),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER,
    revoked_by    TEXT REFERENCES members(id),
    max_uses      INTEGER CHECK (max_uses IS NULL OR max_uses > 0),
    uses          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_member ON api_keys(member_id);
CREATE INDEX api_keys_workspace ON api_keys(workspace_id);

CREATE TABLE devices (
    id                  TEXT PRIMARY KEY,
    workspace_id        TEXT NOT NULL REFERENCES workspaces(id),
    name                TEXT NOT NULL,
    labels              TEXT NOT NULL DEFAULT '{}',
    facts               TEXT,
    spiffe_id           TEXT NOT NULL UNIQUE,
    enrolled_at         INTEGER NOT NULL,
    enrolled_by_key     TEXT NOT NULL REFERENCES api_keys(id),
    enrolled_by_member  TEXT NOT NULL REFERENCES members(id),
    cert_serial         TEXT NOT NULL,
    cert_expires_at     INTEGER NOT NULL,
    revoked_at          INTEGER,
    last_seen_at        INTEGER
);
CREATE INDEX devices_workspace ON devices(workspace_id, enrolled_at);
"#,
    },
    Migration {
        version: 2,
        description: "key rotation and revocation reasons, invitations, audit log",
        sql: r#"
-- A rotated key points at its replacement; its revoked_at may lie in the future (the end of
-- the overlap window): it stays usable until then.
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT REFERENCES api_keys(id);
ALTER TABLE api_keys ADD COLUMN revoked_reason TEXT
    CHECK (revoked_reason IS NULL OR revoked_reason IN ('revoked', 'rotated', 'member_removed'));
UPDATE api_keys SET revoked_reason = 'revoked' WHERE revoked_at IS NOT NULL;
UPDATE api_keys SET revoked_reason = 'member_removed'
    WHERE revoked_at IS NOT NULL
      AND revoked_at = (SELECT m.removed_at FROM members m WHERE m.id = api_keys.member_id);

-- Only the SHA-256 of an invitation token is stored; the token itself is shown once.
CREATE TABLE invitations (
    token_hash    TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    invited_by    TEXT NOT NULL REFERENCES members(id),
    accepted_at   INTEGER,
    accepted_by   TEXT REFERENCES members(id)
);
CREATE INDEX invitations_workspace ON invitations(workspace_id, created_at);

CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    details       TEXT NOT NULL DEFAULT '{}'
);
-- Newest first within a workspace, optionally narrowed by one of the filters.
CREATE INDEX audit_events_workspace ON audit_events(workspace_id, id);
CREATE INDEX audit_events_actor ON audit_events(workspace_id, actor, id);
CREATE INDEX audit_events_action ON audit_events(workspace_id, action, id);
CREATE INDEX audit_events_target ON audit_events(workspace_id, target, id);
CREATE INDEX audit_events_at ON audit_events(workspace_id, at);
"#,
    },
    Migration {
        version: 3,
        description: "device reports, stored once per (device, sequence number)",
        sql: r#"
-- The primary key makes redelivery after a lost acknowledgement harmless: the gateway
-- inserts with INSERT OR IGNORE. No reference to devices: reports outlive nothing but are
-- removed explicitly with their device.
CREATE TABLE reports (
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq > 0),
    received_at  INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
"#,
    },
    Migration {
        version: 4,
        description: "invitation ids and cancellation",
        sql: r#"
-- An invitation is named by a public id (listing, cancelling); the token stays secret. A
-- cancelled invitation cannot be accepted: cancelled by a member, or because its inviter or
-- its invitee was removed from the workspace.
ALTER TABLE invitations ADD COLUMN id TEXT;
ALTER TABLE invitations ADD COLUMN cancelled_at INTEGER;
ALTER TABLE invitations ADD COLUMN cancelled_by TEXT REFERENCES members(id);
ALTER TABLE invitations ADD COLUMN cancelled_reason TEXT;
UPDATE invitations SET id = 'inv_' || lower(hex(randomblob(8))) WHERE id IS NULL;
CREATE UNIQUE INDEX invitations_id ON invitations(id);
"#,
    },
    Migration {
        version: 5,
        description: "the device certificate a renewal superseded, and when",
        sql: r#"
-- Renewal moves cert_serial here: the gateway still admits the previous certificate for a
-- short overlap after cert_superseded_at (the agent swaps its files after the renewal), and
-- no certificate older than that.
ALTER TABLE devices ADD COLUMN previous_cert_serial TEXT;
ALTER TABLE devices ADD COLUMN cert_superseded_at INTEGER;
"#,
    },
    Migration {
        version: 6,
        description: "paged, filtered device lists: connection marks, label rows, indexes",
        sql: r#"
-- The gateway marks a device connected at Hello (connection names the gateway process and
-- its session) and clears the mark when that session ends, so lists and counts filter on
-- it in SQL. A gateway clears the marks it may have left when it starts.
ALTER TABLE devices ADD COLUMN connection TEXT;
ALTER TABLE devices ADD COLUMN connected_at INTEGER;
-- One row per label, written with devices.labels (which stays the label set as read), so
-- label selectors are index lookups. The workspace and enrollment time are copied in (they
-- never change), so a label-filtered page in enrollment order is read from the label index
-- alone, in page order.
CREATE TABLE device_labels (
    device_id    TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL,
    enrolled_at  INTEGER NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (device_id, key)
) WITHOUT ROWID;
INSERT INTO device_labels (device_id, workspace_id, enrolled_at, key, value)
    SELECT d.id, d.workspace_id, d.enrolled_at, j.key, j.value
    FROM devices d, json_each(d.labels) j;
CREATE INDEX device_labels_value
    ON device_labels(workspace_id, key, value, enrolled_at, device_id);
CREATE INDEX device_labels_key ON device_labels(workspace_id, key, enrolled_at, device_id);
-- Counts for dashboards, kept by triggers in the transaction of every change: devices, those
-- marked connected, those revoked; and devices not revoked per certificate expiry day, so
-- "expiring before T" sums whole days and counts only T's own day in the index.
CREATE TABLE device_counts (
    workspace_id TEXT PRIMARY KEY,
    total        INTEGER NOT NULL,
    connected    INTEGER NOT NULL,
    revoked      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE device_expiry_days (
    workspace_id TEXT NOT NULL,
    day          INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, day)
) WITHOUT ROWID;
INSERT INTO device_counts (workspace_id, total, connected, revoked)
    SELECT workspace_id, COUNT(*), SUM(connection IS NOT NULL), SUM(revoked_at IS NOT NULL)
    FROM devices GROUP BY workspace_id;
INSERT INTO device_expiry_days (workspace_id, day, n)
    SELECT workspace_id, cert_expires_at / 86400, COUNT(*) FROM devices
    WHERE revoked_at IS NULL GROUP BY workspace_id, cert_expires_at / 86400;
CREATE TRIGGER device_counts_insert AFTER INSERT ON devices BEGIN
    INSERT INTO device_counts (workspace_id, total, connected, revoked)
        VALUES (NEW.workspace_id, 1, NEW.connection IS NOT NULL, NEW.revoked_at IS NOT NULL)
        ON CONFLICT (workspace_id) DO UPDATE SET total = total + 1,
            connected = connected + excluded.connected, revoked = revoked + excluded.revoked;
    INSERT INTO device_expiry_days (workspace_id, day, n)
        SELECT NEW.workspace_id, NEW.cert_expires_at / 86400, 1 WHERE NEW.revoked_at IS NULL
        ON CONFLICT (workspace_id, day) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER device_counts_delete AFTER DELETE ON devices BEGIN
    UPDATE device_counts SET total = total - 1,
        connected = connected - (OLD.connection IS NOT NULL),
        revoked = revoked - (OLD.revoked_at IS NOT NULL)
        WHERE workspace_id = OLD.workspace_id;
    UPDATE device_expiry_days SET n = n - 1
        WHERE OLD.revoked_at IS NULL AND workspace_id = OLD.workspace_id
          AND day = OLD.cert_expires_at / 86400;
    DELETE FROM device_expiry_days
        WHERE workspace_id = OLD.workspace_id AND day = OLD.cert_expires_at / 86400 AND n = 0;
END;
CREATE TRIGGER device_counts_update AFTER UPDATE OF connection, revoked_at, cert_expires_at
    ON devices
    WHEN (OLD.connection IS NULL) != (NEW.connection IS NULL)
      OR (OLD.revoked_at IS NULL) != (NEW.revoked_at IS NULL)
      OR OLD.cert_expires_at != NEW.cert_expires_at
BEGIN
    UPDATE device_counts
        SET connected = connected + (NEW.connection IS NOT NULL) - (OLD.connection IS NOT NULL),
            revoked = revoked + (NEW.revoked_at IS NOT NULL) - (OLD.revoked_at IS NOT NULL)
        WHERE workspace_id = NEW.workspace_id;
    UPDATE device_expiry_days SET n = n - 1
        WHERE OLD.revoked_at IS NULL AND workspace_id = OLD.workspace_id
          AND day = OLD.cert_expires_at / 86400;
    DELETE FROM device_expiry_days
        WHERE workspace_id = OLD.workspace_id AND day = OLD.cert_expires_at / 86400 AND n = 0;
    INSERT INTO device_expiry_days (workspace_id, day, n)
        SELECT NEW.workspace_id, NEW.cert_expires_at / 86400, 1 WHERE NEW.revoked_at IS NULL
        ON CONFLICT (workspace_id, day) DO UPDATE SET n = n + 1;
END;
-- Keyset pages in each sort order (the id breaks ties).
DROP INDEX devices_workspace;
CREATE INDEX devices_enrolled ON devices(workspace_id, enrolled_at, id);
CREATE INDEX devices_name ON devices(workspace_id, name, id);
CREATE INDEX devices_seen ON devices(workspace_id, COALESCE(last_seen_at, 0), id);
CREATE INDEX devices_connected ON devices(workspace_id, enrolled_at, id)
    WHERE connection IS NOT NULL;
CREATE INDEX devices_disconnected ON devices(workspace_id, enrolled_at, id)
    WHERE connection IS NULL;
CREATE INDEX devices_cert_expiry ON devices(workspace_id, cert_expires_at)
    WHERE revoked_at IS NULL;
CREATE INDEX devices_by_key ON devices(enrolled_by_key, enrolled_at, id);
CREATE INDEX devices_by_member ON devices(enrolled_by_member, enrolled_at, id);
CREATE INDEX api_keys_created ON api_keys(workspace_id, created_at, id);
CREATE INDEX members_created ON members(workspace_id, created_at, id);
"#,
    },
    // The web console's sign-in state.
    Migration {
        version: 7,
        description: "web console sessions and one-time sign-in links",
        sql: r#"
-- A console session is bound to the API key its member signed in with: every request checks
-- that key again (revoked, expired, member removed). Only the SHA-256 of the session id and
-- of a sign-in token is stored.
CREATE TABLE console_sessions (
    id_hash       TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL REFERENCES api_keys(id),
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX console_sessions_key ON console_sessions(key_id);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);

CREATE TABLE console_signin_tokens (
    token_hash  TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL REFERENCES api_keys(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX console_signin_tokens_expiry ON console_signin_tokens(expires_at);
"#,
    },
    // What the console's Devices page shows besides facts.
    Migration {
        version: 8,
        description: "the agent version each device gave at its latest Hello",
        sql: r#"
ALTER TABLE devices ADD COLUMN agent_version TEXT;
"#,
    },
    // Text search that stays fast when few devices match.
    Migration {
        version: 9,
        description: "a trigram index of device names and ids for text search",
        sql: r#"
-- Every substring of three characters or more of a device's name and id, in an FTS5 index
-- with the trigram tokenizer. Its rows are keyed by device_search_rows.id, an INTEGER
-- PRIMARY KEY (a table's implicit rowid may change on VACUUM; this one does not). Kept by
-- triggers in the transaction of each enrollment, rename and deletion.
CREATE TABLE device_search_rows (
    id         INTEGER PRIMARY KEY,
    device_id  TEXT NOT NULL UNIQUE
);
CREATE VIRTUAL TABLE device_search USING fts5(
    workspace_id UNINDEXED, name, device_id, tokenize = 'trigram'
);
INSERT INTO device_search_rows (device_id) SELECT id FROM devices ORDER BY enrolled_at, id;
INSERT INTO device_search (rowid, workspace_id, name, device_id)
    SELECT r.id, d.workspace_id, d.name, d.id
    FROM device_search_rows r JOIN devices d ON d.id = r.device_id;
CREATE TRIGGER device_search_insert AFTER INSERT ON devices BEGIN
    INSERT INTO device_search_rows (device_id) VALUES (new.id);
    INSERT INTO device_search (rowid, workspace_id, name, device_id)
        VALUES (last_insert_rowid(), new.workspace_id, new.name, new.id);
END;
CREATE TRIGGER device_search_rename AFTER UPDATE OF name ON devices
WHEN new.name IS NOT old.name BEGIN
    UPDATE device_search SET name = new.name
        WHERE rowid = (SELECT id FROM device_search_rows WHERE device_id = new.id);
END;
CREATE TRIGGER device_search_delete AFTER DELETE ON devices BEGIN
    DELETE FROM device_search
        WHERE rowid = (SELECT id FROM device_search_rows WHERE device_id = old.id);
    DELETE FROM device_search_rows WHERE device_id = old.id;
END;
"#,
    },
    // Several replicas over one store, and who the store belongs to.
    Migration {
        version: 10,
        description: "the store's owner (CA and secret check) and replica leases",
        sql: r#"
-- The CA fingerprint and a check value of the server secret of the data directory that
-- initialized the store: a replica whose data directory holds other ones refuses to start.
CREATE TABLE deployment (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    ca_fingerprint  TEXT NOT NULL,
    secret_check    TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
-- A gateway process holding sessions renews its lease every few seconds; the connection
-- marks (`<instance>-<n>`) of a process whose lease ended are cleared by the others.
CREATE TABLE replicas (
    instance     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL
);
CREATE INDEX devices_connection ON devices(connection) WHERE connection IS NOT NULL;
"#,
    },
    Migration {
        version: 11,
        description: "the CA that signed each device's certificate",
        sql: r#"
-- Fingerprint of the CA that signed the device's current certificate, so a CA rotation
-- knows who still holds a certificate from the old CA. NULL: issued before it was recorded.
ALTER TABLE devices ADD COLUMN cert_ca TEXT;
"#,
    },
    Migration {
        version: 12,
        description: "the CAs a rotation retired",
        sql: r#"
-- A CA `heex-cloud ca retire` retired: a certificate it signs is never recorded again, so a
-- process that has not yet reread its CA files cannot put a device back on it.
CREATE TABLE retired_cas (
    fingerprint  TEXT PRIMARY KEY,
    retired_at   INTEGER NOT NULL
);
"#,
    },
    Migration {
        version: 13,
        description: "the public key of each device's certificate",
        sql: r#"
-- SHA-256 (hex) of the device certificate's public key: a renewal repeated from the
-- certificate it superseded (the agent crashed before installing the answer) is answered
-- only for this same key. NULL: issued before it was recorded.
ALTER TABLE devices ADD COLUMN cert_key TEXT;
"#,
    },
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The schema version of the database (0 for an empty database).
pub fn current_version(conn: &Connection) -> Result<i64, StoreError> {
    let has_table: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if has_table.is_none() {
        return Ok(0);
    }
    let version: Option<i64> =
        conn.query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })?;
    Ok(version.unwrap_or(0))
}

/// Applies every migration newer than the database's version. Running it again is a no-op.
/// Refuses a database whose schema is newer than this build.
pub fn migrate(conn: &mut Connection, now_unix: i64) -> Result<i64, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version     INTEGER PRIMARY KEY,
             applied_at  INTEGER NOT NULL
         )",
    )?;
    let start = current_version(conn)?;
    let mut current = start;
    let latest = latest_version();
    if start > latest {
        return Err(StoreError::Schema(format!(
            "database schema version {start} is newer than this heex-cloud supports ({latest}); \
             upgrade heex-cloud"
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > start) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql).map_err(|e| {
            StoreError::Schema(format!(
                "migration {} ({}) failed: {e}",
                m.version, m.description
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![m.version, now_unix],
        )?;
        tx.commit()?;
        tracing::info!(
            version = m.version,
            "applied schema migration: {}",
            m.description
        );
        current = m.version;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.description);
        }
    }

    #[test]
    fn migrate_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(current_version(&conn).unwrap(), 0);
        assert_eq!(migrate(&mut conn, 1).unwrap(), latest_version());
        assert_eq!(migrate(&mut conn, 2).unwrap(), latest_version());
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, MIGRATIONS.len() as i64);
        let applied: i64 = conn
            .query_row(
                "SELECT applied_at FROM schema_version WHERE version = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(applied, 1, "a second run must not re-apply");
    }

    #[test]
    fn version_1_data_is_carried_forward() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);",
        )
        .unwrap();
        conn.execute_batch(MIGRATIONS[0].sql).unwrap();
        conn.execute_batch(
            "INSERT INTO schema_version VALUES (1, 0);
             INSERT INTO workspaces VALUES ('ws_000000000001', 'default', 0);
             INSERT INTO members VALUES ('mem_00000000000a', 'ws_000000000001', 'a@x', 'owner', 0, NULL);
             INSERT INTO members VALUES ('mem_00000000000b', 'ws_000000000001', 'b@x', 'member', 0, 100);
             INSERT INTO api_keys (id, workspace_id, member_id, name, scope, created_at, expires_at,
                                   revoked_at, revoked_by)
             VALUES ('000000000001', 'ws_000000000001', 'mem_00000000000a', 'a', 'admin', 0, 999, 50,
                     'mem_00000000000a'),
                    ('000000000002', 'ws_000000000001', 'mem_00000000000b', 'b', 'enroll', 0, 999, 100,
                     'mem_00000000000a'),
                    ('000000000003', 'ws_000000000001', 'mem_00000000000a', 'c', 'admin', 0, 999, NULL,
                     NULL);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, 200).unwrap(), latest_version());
        let reasons: Vec<(String, Option<String>, Option<String>)> = conn
            .prepare("SELECT id, revoked_reason, replaced_by FROM api_keys ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            reasons,
            [
                ("000000000001".into(), Some("revoked".into()), None),
                ("000000000002".into(), Some("member_removed".into()), None),
                ("000000000003".into(), None, None),
            ]
        );
        for table in ["invitations", "audit_events"] {
            let n: i64 = conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0, "{table}");
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, 1).unwrap();
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)",
            [latest_version() + 1],
        )
        .unwrap();
        assert!(matches!(migrate(&mut conn, 1), Err(StoreError::Schema(_))));
    }
}
