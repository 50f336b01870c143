//! `heex console`: a one-time sign-in link to the web console.

use heex_proto::api::ConsoleSignInLink;
use serde_json::json;

use crate::context::Ctx;
use crate::error::CliError;
use crate::table::fields;

/// Asks the server for a one-time sign-in link for the stored key and prints it. The token
/// sits in the link's fragment (never sent in a request line or logged by the server); it
/// works once, for a few minutes, and the session it opens ends with the key.
pub fn console(ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let (_profile, client) = ctx.client()?;
    let reply = client.post::<_, ConsoleSignInLink>("/v1/console/signin-links", &json!({}))?;
    let link = format!(
        "{}{}#{}",
        client.server(),
        reply.value.path,
        reply.value.token.expose()
    );
    if ctx.json {
        return ctx.print_json(&json!({"url": link, "expires_at": reply.raw["expires_at"]}));
    }
    let text = fields(&[
        ("Console", format!("{}/console/", client.server())),
        ("Sign-in link", link),
        (
            "Expires",
            format!("{} (works once)", ctx.clock.both(reply.value.expires_at)),
        ),
    ]);
    ctx.print(&text)
}
