//! `heex members list|invite|remove`.

use heex_proto::api::{
    InvitationPage, InviteRequest, InviteResponse, MemberInfo, MemberPage, RemoveMemberResponse,
};
use heex_proto::MemberId;
use serde_json::json;

use super::whole_secs;
use crate::cli::MembersCommand;
use crate::client::ApiClient;
use crate::config::Profile;
use crate::context::Ctx;
use crate::error::CliError;
use crate::paging::fetch_all;
use crate::table::{Clock, Table};
use crate::trust::TrustAnchor;

/// Runs a `heex members` subcommand.
pub fn run(ctx: &mut Ctx<'_>, cmd: &MembersCommand) -> Result<(), CliError> {
    match cmd {
        MembersCommand::List => list(ctx),
        MembersCommand::Invite {
            email,
            role,
            expires_in,
        } => {
            let req = InviteRequest {
                email: email.trim().to_owned(),
                role: (*role).into(),
                expires_in_secs: expires_in
                    .map(|d| whole_secs(d, "--expires-in"))
                    .transpose()?,
            };
            invite(ctx, &req)
        }
        MembersCommand::Remove { member } => remove(ctx, member),
    }
}

fn list(ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let (_, client) = ctx.client()?;
    let reply = fetch_all::<MemberPage>(&client, "/v1/members", &[])?;
    if ctx.json {
        return ctx.print_json(&serde_json::Value::Array(reply.raw));
    }
    let text = member_table(&reply.items, &ctx.clock);
    ctx.print(&text)
}

/// The human table of members.
pub fn member_table(members: &[MemberInfo], clock: &Clock) -> String {
    let mut table = Table::new(["ID", "EMAIL", "ROLE", "STATUS", "ACTIVE KEYS", "JOINED"]);
    for m in members {
        let status = match m.removed_at {
            Some(at) => format!("removed {}", clock.ago(at)),
            None => "active".into(),
        };
        table.row(vec![
            m.id.clone(),
            m.email.clone(),
            m.role.as_str().to_owned(),
            status,
            m.active_keys.to_string(),
            clock.ago(m.created_at),
        ]);
    }
    table.render()
}

fn invite(ctx: &mut Ctx<'_>, req: &InviteRequest) -> Result<(), CliError> {
    let (profile, client) = ctx.client()?;
    let reply = client.post::<_, InviteResponse>("/v1/invitations", req)?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    let inv = &reply.value;
    if !ctx.tty() {
        // A script asked: the token alone, like `keys create` prints the key alone.
        return ctx.println(inv.token.expose());
    }
    let text = format!(
        "Invited {} as {}; the invitation works once and expires {}.\nSend them this command:\n  {}",
        inv.email,
        inv.role.as_str(),
        ctx.clock.expiry(inv.expires_at),
        accept_command(inv.token.expose(), &profile, &client)
    );
    ctx.println(&text)
}

/// The command the invitee runs to join.
fn accept_command(token: &str, profile: &Profile, client: &ApiClient) -> String {
    let trust = match &profile.trust {
        TrustAnchor::Pinned(fp) => format!("--ca-fingerprint {fp}"),
        TrustAnchor::CaFile { path, .. } => {
            format!(
                "--ca-file {} (a copy of the cloud's CA certificate)",
                path.display()
            )
        }
    };
    format!(
        "heex invitations accept {token} --server {} {trust}",
        client.server()
    )
}

fn remove(ctx: &mut Ctx<'_>, member: &str) -> Result<(), CliError> {
    let (_, client) = ctx.client()?;
    let id = member_id(&client, member)?;
    let reply =
        client.post::<_, RemoveMemberResponse>(&format!("/v1/members/{id}/remove"), &json!({}))?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    let r = &reply.value;
    let keys: Vec<String> = r.revoked_keys.iter().map(ToString::to_string).collect();
    let revoked = match keys.len() {
        0 => "no API keys to revoke".to_owned(),
        1 => format!("revoked 1 API key: {}", keys.join(", ")),
        n => format!("revoked {n} API keys: {}", keys.join(", ")),
    };
    let text = format!(
        "Removed {} ({}); {revoked}. Devices they enrolled stay enrolled.",
        r.member.email,
        r.member.role.as_str()
    );
    ctx.println(&text)
}

/// A member id from an id or an email (looked up among current members).
fn member_id(client: &ApiClient, member: &str) -> Result<MemberId, CliError> {
    let member = member.trim();
    if let Ok(id) = member.parse::<MemberId>() {
        return Ok(id);
    }
    if !member.contains('@') {
        return Err(CliError::Usage(format!(
            "{member:?} is neither a member id (mem_…) nor an email; `heex members list` shows both"
        )));
    }
    let members = fetch_all::<MemberPage>(client, "/v1/members", &[])?.items;
    let found = members
        .iter()
        .find(|m| m.removed_at.is_none() && m.email.eq_ignore_ascii_case(member))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no current member with email {member} in this workspace; `heex members list` shows them"
            ))
        })?;
    found.id.parse().map_err(|_| {
        CliError::Unexpected(format!(
            "the server listed member {member} with a malformed id {:?}",
            found.id
        ))
    })
}

/// `heex invitations list`.
pub fn list_invitations(ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let (_, client) = ctx.client()?;
    let reply = fetch_all::<InvitationPage>(&client, "/v1/invitations", &[])?;
    if ctx.json {
        return ctx.print_json(&serde_json::Value::Array(reply.raw));
    }
    let mut table = Table::new(["ID", "EMAIL", "ROLE", "INVITED BY", "CREATED", "EXPIRES"]);
    for i in &reply.items {
        table.row(vec![
            i.id.clone(),
            i.email.clone(),
            i.role.as_str().to_owned(),
            i.invited_by.clone(),
            ctx.clock.relative(i.created_at),
            ctx.clock.expiry(i.expires_at),
        ]);
    }
    let text = table.render();
    ctx.print(&text)
}

/// `heex invitations cancel ID`.
pub fn cancel_invitation(ctx: &mut Ctx<'_>, id: &str) -> Result<(), CliError> {
    let (_, client) = ctx.client()?;
    let id = id.trim();
    client.delete(&format!("/v1/invitations/{id}"))?;
    if ctx.json {
        return ctx.print_json(&json!({"id": id, "cancelled": true}));
    }
    ctx.println(&format!(
        "Cancelled invitation {id}; its token no longer works."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use heex_proto::api::Role;
    use time::macros::{datetime, offset};

    #[test]
    fn member_table_shows_removed_members() {
        let clock = Clock {
            now: datetime!(2026-05-01 12:00:00 UTC),
            offset: offset!(UTC),
        };
        let members = [
            MemberInfo {
                id: "mem_AAAAAAAAAAAA".into(),
                email: "alice@example.com".into(),
                role: Role::Owner,
                created_at: clock.now - time::Duration::days(30),
                removed_at: None,
                active_keys: 2,
            },
            MemberInfo {
                id: "mem_BBBBBBBBBBBB".into(),
                email: "bob@example.com".into(),
                role: Role::Member,
                created_at: clock.now - time::Duration::days(2),
                removed_at: Some(clock.now - time::Duration::hours(2)),
                active_keys: 0,
            },
        ];
        let text = member_table(&members, &clock);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("owner") && lines[1].contains("active"),
            "{text}"
        );
        assert!(lines[1].ends_with("30 days ago"), "{text}");
        assert!(lines[2].contains("removed 2 hours ago"), "{text}");
    }
}
