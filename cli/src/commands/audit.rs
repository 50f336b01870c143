//! `heex audit`: the workspace's audit log, newest first.

use heex_proto::api::{AuditEvent, AuditPage, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use serde_json::Value;
use time::OffsetDateTime;

use crate::cli::AuditArgs;
use crate::context::Ctx;
use crate::error::CliError;
use crate::paging::{print_pages, JsonForm, Listing};
use crate::table::{Clock, Table};

/// Shows audit events matching the filters.
pub fn run(ctx: &mut Ctx<'_>, args: &AuditArgs) -> Result<(), CliError> {
    let query = query(args, ctx.clock.now)?;
    let (_, client) = ctx.client()?;
    let listing = Listing {
        json: ctx.json.then_some(JsonForm::Array),
        empty: "No matching audit events.",
        table: audit_table,
    };
    let max = match (args.all, args.limit) {
        (true, _) => None,
        (false, n) => Some(n.unwrap_or(u64::from(DEFAULT_PAGE_LIMIT))),
    };
    print_pages::<AuditPage>(
        ctx,
        &client,
        "/v1/audit",
        &query,
        MAX_PAGE_LIMIT,
        max,
        &listing,
    )?;
    Ok(())
}

/// The query parameters for `GET /v1/audit`.
pub fn query(
    args: &AuditArgs,
    now: OffsetDateTime,
) -> Result<Vec<(&'static str, String)>, CliError> {
    let mut q = Vec::new();
    if let Some(a) = &args.actor {
        q.push(("actor", a.clone()));
    }
    if let Some(a) = &args.action {
        q.push(("action", a.clone()));
    }
    if let Some(t) = &args.target {
        q.push(("target", t.clone()));
    }
    if let Some(s) = &args.since {
        q.push(("since", super::time_arg("--since", s, now, -1)?));
    }
    Ok(q)
}

/// The human table of audit events.
pub fn audit_table(events: &[AuditEvent], clock: &Clock) -> String {
    let mut table = Table::new(["TIME", "ACTOR", "ACTION", "TARGET", "DETAILS"]);
    for e in events {
        table.row(vec![
            clock.local(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            details(&e.details),
        ]);
    }
    table.render()
}

/// Details as compact `key=value` pairs.
fn details(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn args() -> AuditArgs {
        AuditArgs {
            actor: Some("alice@example.com".into()),
            action: Some("key.".into()),
            target: None,
            since: None,
            limit: Some(5),
            all: false,
        }
    }

    #[test]
    fn filters_become_query_parameters() {
        let now = datetime!(2026-05-01 12:00:00 UTC);
        let mut a = args();
        a.since = Some("2h".into());
        let q = query(&a, now).unwrap();
        assert_eq!(
            q,
            vec![
                ("actor", "alice@example.com".to_owned()),
                ("action", "key.".to_owned()),
                ("since", "2026-05-01T10:00:00Z".to_owned()),
            ]
        );
        a.since = Some("2026-04-30T23:00:00+02:00".into());
        let q = query(&a, now).unwrap();
        assert!(
            q.contains(&("since", "2026-04-30T21:00:00Z".to_owned())),
            "{q:?}"
        );
        a.since = Some("yesterday".into());
        assert!(query(&a, now).is_err());
    }

    #[test]
    fn details_are_compact() {
        assert_eq!(details(&Value::Null), "");
        assert_eq!(
            details(&serde_json::json!({"scope": "admin", "max_uses": 3})),
            "max_uses=3 scope=admin"
        );
    }
}
