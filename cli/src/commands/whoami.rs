//! `heex whoami`.

use heex_proto::api::WhoAmI;

use crate::context::Ctx;
use crate::error::CliError;
use crate::table::{fields, Clock};

/// Shows who the API key belongs to.
pub fn whoami(ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let (_profile, client) = ctx.client()?;
    let reply = client.get::<WhoAmI>("/v1/whoami", &[])?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    let text = describe(&reply.value, client.server(), &ctx.clock);
    ctx.print(&text)
}

/// The human form of a [`WhoAmI`].
pub fn describe(who: &WhoAmI, server: &str, clock: &Clock) -> String {
    let k = &who.key;
    let mut shown = vec![
        ("Email", who.email.clone()),
        ("Role", who.role.clone()),
        (
            "Workspace",
            format!("{} ({})", who.workspace_name, who.workspace_id),
        ),
        ("Member", who.member_id.clone()),
        ("Server", server.to_owned()),
        (
            "API key",
            format!("{} \"{}\", scope {}", k.id, k.name, k.scope.as_str()),
        ),
        ("Expires", clock.both(k.expires_at)),
    ];
    if let Some(warning) = &who.warning {
        shown.push(("Warning", warning.clone()));
    }
    fields(&shown)
}
