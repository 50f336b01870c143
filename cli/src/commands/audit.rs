//! `heex audit`: the workspace's audit log, newest first.

use heex_proto::api::AuditEvent;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::AuditArgs;
use crate::context::Ctx;
use crate::error::CliError;
use crate::table::{Clock, Table};

/// Shows audit events matching the filters.
pub fn run(ctx: &mut Ctx<'_>, args: &AuditArgs) -> Result<(), CliError> {
    let query = query(args, ctx.clock.now)?;
    let (_, client) = ctx.client()?;
    let reply = client.get::<Vec<AuditEvent>>("/v1/audit", &query)?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    if reply.value.is_empty() {
        return ctx.println("No matching audit events.");
    }
    let text = audit_table(&reply.value, &ctx.clock);
    ctx.print(&text)
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
        q.push(("since", since(s, now)?));
    }
    if let Some(n) = args.limit {
        q.push(("limit", n.to_string()));
    }
    Ok(q)
}

/// `--since` as RFC 3339: given as such, or as a duration before `now` ("2h", "7d").
fn since(text: &str, now: OffsetDateTime) -> Result<String, CliError> {
    let text = text.trim();
    let at = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let d = humantime::parse_duration(text).map_err(|_| {
                CliError::Usage(format!(
                    "--since {text:?} is neither an RFC 3339 time (2026-05-01T00:00:00Z) nor a \
                     duration (2h, 7d)"
                ))
            })?;
            let d = time::Duration::try_from(d)
                .map_err(|_| CliError::Usage(format!("--since {text:?} is too long ago")))?;
            now.checked_sub(d)
                .ok_or_else(|| CliError::Usage(format!("--since {text:?} is too long ago")))?
        }
    };
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| CliError::Usage(format!("--since {text:?}: {e}")))
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
                ("limit", "5".to_owned()),
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
