//! `heex keys list|create|copy|revoke|rotate`.

use heex_proto::api::{
    CopyKeyResponse, CreateKeyRequest, CreateKeyResponse, KeyInfo, KeyListEntry, KeyStatus,
    RotateKeyRequest,
};
use heex_proto::{ApiKey, KeyId};
use serde_json::json;

use super::{key_id_arg, whole_secs};
use crate::cli::KeysCommand;
use crate::config::{write_credentials, Profile, StoredCredentials};
use crate::context::Ctx;
use crate::error::CliError;
use crate::table::{Clock, Table};

const SECS_PER_DAY: u64 = 86_400;

/// Runs a `heex keys` subcommand.
pub fn run(ctx: &mut Ctx<'_>, cmd: &KeysCommand) -> Result<(), CliError> {
    match cmd {
        KeysCommand::List { all } => list(ctx, *all),
        KeysCommand::Create {
            name,
            scope,
            expires_in,
            max_uses,
        } => {
            let (expires_in_days, expires_in_secs) = match expires_in {
                None => (None, None),
                Some(d) => {
                    let secs = whole_secs(*d, "--expires-in")?;
                    match u32::try_from(secs / SECS_PER_DAY) {
                        Ok(days) if secs % SECS_PER_DAY == 0 => (Some(days), None),
                        _ => (None, Some(secs)),
                    }
                }
            };
            let req = CreateKeyRequest {
                name: name.clone(),
                scope: (*scope).into(),
                expires_in_days,
                expires_in_secs,
                max_uses: *max_uses,
            };
            create(ctx, &req)
        }
        KeysCommand::Copy { id } => copy(ctx, &key_id_arg(id)?),
        KeysCommand::Revoke { id } => revoke(ctx, &key_id_arg(id)?),
        KeysCommand::Rotate { id, overlap } => {
            let overlap_secs = overlap.map(|d| d.as_secs()).filter(|s| *s > 0);
            rotate(ctx, &key_id_arg(id)?, overlap_secs)
        }
    }
}

fn list(ctx: &mut Ctx<'_>, all: bool) -> Result<(), CliError> {
    let (_, client) = ctx.client()?;
    let query = if all {
        vec![("all", "true".to_owned())]
    } else {
        Vec::new()
    };
    let reply = crate::paging::fetch_all::<heex_proto::api::KeyPage>(&client, "/v1/keys", &query)?;
    if ctx.json {
        return ctx.print_json(&serde_json::Value::Array(reply.raw));
    }
    if reply.items.is_empty() {
        return ctx.println("No API keys.");
    }
    let text = key_table(&reply.items, all, &ctx.clock);
    ctx.print(&text)
}

/// The human table of listed keys; `owners` adds the owner column.
pub fn key_table(keys: &[KeyListEntry], owners: bool, clock: &Clock) -> String {
    let mut headers = vec!["ID", "NAME", "SCOPE"];
    if owners {
        headers.push("OWNER");
    }
    headers.extend(["STATUS", "USES", "EXPIRES", "LAST USED"]);
    let mut table = Table::new(headers);
    for k in keys {
        let i = &k.info;
        let mut row = vec![
            i.id.to_string(),
            i.name.clone(),
            i.scope.as_str().to_owned(),
        ];
        if owners {
            row.push(i.owner.clone());
        }
        let uses = match k.max_uses {
            Some(max) => format!("{}/{max}", k.uses),
            None => k.uses.to_string(),
        };
        row.extend([
            status(k, clock),
            uses,
            clock.expiry(i.expires_at),
            clock.ago_or_never(i.last_used_at),
        ]);
        table.row(row);
    }
    table.render()
}

/// A key's status in words, including a pending revocation after rotation.
fn status(k: &KeyListEntry, clock: &Clock) -> String {
    match (k.status, k.info.revoked_at) {
        (KeyStatus::Active, Some(at)) if at > clock.now => {
            format!("active, revoked {}", clock.relative(at))
        }
        (KeyStatus::Active, _) => "active".into(),
        (KeyStatus::Expired, _) => "expired".into(),
        (KeyStatus::Exhausted, _) => "exhausted".into(),
        (KeyStatus::Revoked, _) => match (&k.replaced_by, &k.info.revoked_by) {
            (Some(new), _) => format!("revoked (rotated to {new})"),
            (None, Some(by)) => format!("revoked by {by}"),
            (None, None) => "revoked".into(),
        },
    }
}

/// "API key ID ("name", scope S, expires …)".
fn summary(info: &KeyInfo, clock: &Clock) -> String {
    format!(
        "API key {} (\"{}\", scope {}, expires {})",
        info.id,
        info.name,
        info.scope.as_str(),
        clock.expiry(info.expires_at)
    )
}

fn create(ctx: &mut Ctx<'_>, req: &CreateKeyRequest) -> Result<(), CliError> {
    let (_, client) = ctx.client()?;
    let reply = client.post::<_, CreateKeyResponse>("/v1/keys", req)?;
    let created = &reply.value;
    tracing::info!(key = %created.info.id, "API key created");
    let text = summary(&created.info, &ctx.clock);
    ctx.deliver_key(created.key.expose(), &text, &reply.raw, "/key")
}

fn copy(ctx: &mut Ctx<'_>, id: &KeyId) -> Result<(), CliError> {
    let (_, client) = ctx.client()?;
    let reply = client.post::<_, CopyKeyResponse>(&format!("/v1/keys/{id}/copy"), &json!({}))?;
    let text = summary(&reply.value.info, &ctx.clock);
    ctx.deliver_key(reply.value.key.expose(), &text, &reply.raw, "/key")
}

fn revoke(ctx: &mut Ctx<'_>, id: &KeyId) -> Result<(), CliError> {
    let (profile, client) = ctx.client()?;
    let reply = client.post::<_, KeyInfo>(&format!("/v1/keys/{id}/revoke"), &json!({}))?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    let info = &reply.value;
    let mut text = format!(
        "Revoked API key {} (\"{}\", owner {})",
        info.id, info.name, info.owner
    );
    if profile.api_key.id() == id {
        text.push_str(
            "\nThis was the key heex is using: log in again with another key (`heex login`).",
        );
    }
    ctx.println(&text)
}

fn rotate(ctx: &mut Ctx<'_>, id: &KeyId, overlap_secs: Option<u64>) -> Result<(), CliError> {
    let (profile, client) = ctx.client()?;
    let reply = client.post::<_, CreateKeyResponse>(
        &format!("/v1/keys/{id}/rotate"),
        &RotateKeyRequest { overlap_secs },
    )?;
    let new = &reply.value;
    tracing::info!(old = %id, new = %new.info.id, "API key rotated");
    let updated = update_stored_key(ctx, &profile, id, new.key.expose())?;
    let old_fate = match overlap_secs {
        Some(s) => format!(
            "{id} stays valid until {}",
            ctx.clock.local(
                ctx.clock.now + time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))
            )
        ),
        None => format!("{id} is revoked"),
    };
    let mut text = format!("{}; {old_fate}", summary(&new.info, &ctx.clock));
    if updated {
        text.push_str("; stored credentials updated");
    }
    ctx.deliver_key(new.key.expose(), &text, &reply.raw, "/key")
}

/// When the rotated key is the one stored by `heex login`, stores its replacement so heex keeps
/// working after the overlap. Returns whether the file was updated.
fn update_stored_key(
    ctx: &Ctx<'_>,
    profile: &Profile,
    old: &KeyId,
    new_key: &str,
) -> Result<bool, CliError> {
    let (Some(path), None) = (&profile.file, &ctx.env.api_key) else {
        return Ok(false);
    };
    if profile.api_key.id() != old {
        return Ok(false);
    }
    let Ok(key) = new_key.parse::<ApiKey>() else {
        return Ok(false);
    };
    let Some(stored) = crate::config::read_credentials(path)? else {
        return Ok(false);
    };
    // Only the key changes: keep what the file says about the server and its trust, even if
    // the environment overrode them for this run.
    let updated = StoredCredentials {
        api_key: key.expose(),
        ..stored
    };
    write_credentials(path, &updated)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heex_proto::api::Scope;
    use time::macros::{datetime, offset};

    fn entry(id: &str, status: KeyStatus) -> KeyListEntry {
        let clock = clock();
        KeyListEntry {
            info: KeyInfo {
                id: id.parse().unwrap(),
                name: "ci".into(),
                scope: Scope::Enroll,
                owner: "bob@example.com".into(),
                created_at: clock.now - time::Duration::days(1),
                expires_at: clock.now + time::Duration::days(12),
                last_used_at: None,
                revoked_at: None,
                revoked_by: None,
            },
            status,
            uses: 1,
            max_uses: Some(5),
            replaced_by: None,
        }
    }

    fn clock() -> Clock {
        Clock {
            now: datetime!(2026-05-01 12:00:00 UTC),
            offset: offset!(UTC),
        }
    }

    #[test]
    fn key_table_shows_status_uses_and_relative_times() {
        let c = clock();
        let mut rotated = entry("BBBBBBBBBBBB", KeyStatus::Revoked);
        rotated.replaced_by = Some("CCCCCCCCCCCC".parse().unwrap());
        rotated.info.last_used_at = Some(c.now - time::Duration::hours(3));
        let mut pending = entry("DDDDDDDDDDDD", KeyStatus::Active);
        pending.info.revoked_at = Some(c.now + time::Duration::hours(1));
        pending.max_uses = None;
        let mut expired = entry("EEEEEEEEEEEE", KeyStatus::Expired);
        expired.info.expires_at = c.now - time::Duration::days(3);
        let keys = [
            entry("AAAAAAAAAAAA", KeyStatus::Active),
            rotated,
            pending,
            expired,
        ];
        let text = key_table(&keys, true, &c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].starts_with("ID") && lines[0].contains("OWNER"),
            "{text}"
        );
        assert!(
            lines[1].contains("active") && lines[1].contains("1/5"),
            "{text}"
        );
        assert!(
            lines[1].contains("in 12 days") && lines[1].ends_with("never"),
            "{text}"
        );
        assert!(
            lines[2].contains("revoked (rotated to CCCCCCCCCCCC)"),
            "{text}"
        );
        assert!(lines[2].ends_with("3 hours ago"), "{text}");
        assert!(lines[3].contains("active, revoked in 1 hour"), "{text}");
        assert!(lines[4].contains("expired 3 days ago"), "{text}");
        assert!(!key_table(&keys, false, &c).contains("OWNER"));
    }
}
