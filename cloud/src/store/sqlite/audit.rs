//! The audit log: events are inserted by the same transaction as the change they record,
//! and read newest first with optional filters.

use super::paging::SqlPage;
use heex_proto::api::AuditEvent;
use heex_proto::WorkspaceId;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection};

use super::{conversion, time_at, SqliteStore};
use crate::store::{to_unix, AuditEntry, AuditFilter, PageOf, SortValue, StoreError};

impl SqliteStore {
    pub(crate) async fn audit_events(
        &self,
        workspace: WorkspaceId,
        filter: AuditFilter,
    ) -> Result<PageOf<AuditEvent>, StoreError> {
        self.read(move |c| select(c, &workspace, &filter)).await
    }
}

/// Inserts one event on `c`, inside the caller's transaction.
pub(super) fn insert(c: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    let details = serde_json::to_string(&e.details)
        .map_err(|err| StoreError::Database(format!("cannot encode audit details: {err}")))?;
    c.prepare_cached(
        "INSERT INTO audit_events (workspace_id, at, actor, action, target, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        e.workspace_id.as_str(),
        to_unix(e.at),
        e.actor,
        e.action.as_str(),
        e.target,
        details
    ])?;
    Ok(())
}

/// The SQL condition and bound values for an action filter: exact, or a prefix when it ends
/// with '.' (a range, so the index serves it).
fn action_condition(action: &str) -> (&'static str, Vec<Value>) {
    match action.strip_suffix('.') {
        Some(stem) => (
            // '/' follows '.' in every collation SQLite uses for TEXT.
            "action >= ? AND action < ?",
            vec![
                Value::Text(action.to_owned()),
                Value::Text(format!("{stem}/")),
            ],
        ),
        None => ("action = ?", vec![Value::Text(action.to_owned())]),
    }
}

fn select(
    c: &Connection,
    workspace: &WorkspaceId,
    f: &AuditFilter,
) -> Result<PageOf<AuditEvent>, StoreError> {
    // Only the conditions in use appear, so each filter combination gets its own cached
    // statement and the planner can pick the matching index.
    let mut sql = String::from(
        "SELECT id, at, actor, action, target, details FROM audit_events WHERE workspace_id = ?",
    );
    let mut values = vec![Value::Text(workspace.as_str().to_owned())];
    if let Some(actor) = &f.actor {
        sql.push_str(" AND actor = ?");
        values.push(Value::Text(actor.clone()));
    }
    if let Some(action) = &f.action {
        let (cond, bound) = action_condition(action);
        sql.push_str(" AND ");
        sql.push_str(cond);
        values.extend(bound);
    }
    if let Some(target) = &f.target {
        sql.push_str(" AND target = ?");
        values.push(Value::Text(target.clone()));
    }
    if let Some(since) = f.since {
        sql.push_str(" AND at >= ?");
        values.push(Value::Integer(to_unix(since)));
    }
    // Newest first: the page after a position holds older events.
    f.page.finish_query(&mut sql, &mut values, &["id"], true)?;

    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |row| {
        let details: String = row.get(5)?;
        Ok(AuditEvent {
            id: row.get(0)?,
            at: time_at(row, 1)?,
            actor: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            details: serde_json::from_str(&details).map_err(|e| conversion(5, e))?,
        })
    })?;
    let rows = rows.collect::<Result<Vec<_>, _>>()?;
    Ok(PageOf::from_rows(rows, &f.page, |e: &AuditEvent| {
        vec![SortValue::Int(e.id)]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_filters_are_ranges() {
        let (cond, values) = action_condition("key.");
        assert_eq!(cond, "action >= ? AND action < ?");
        assert_eq!(
            values,
            [Value::Text("key.".into()), Value::Text("key/".into())]
        );
        // Every "key.*" action sorts inside the range, "keyx" and "member.*" outside.
        for (name, inside) in [
            ("key.create", true),
            ("key.rotate", true),
            ("key", false),
            ("keys", false),
            ("member.join", false),
        ] {
            assert_eq!(("key.".."key/").contains(&name), inside, "{name}");
        }
        let (cond, values) = action_condition("key.create");
        assert_eq!(cond, "action = ?");
        assert_eq!(values, [Value::Text("key.create".into())]);
    }
}
