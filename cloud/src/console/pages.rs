//! The console's HTML, rendered with maud (every interpolated value is escaped).

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use heex_proto::api::{AuditEvent, InvitationInfo, KeyListEntry, KeyStatus, Role};
use maud::{html, Markup, DOCTYPE};
use time::OffsetDateTime;

use crate::error::ApiError;

pub(super) mod devices;

/// A key expiring within this long is highlighted and offers Rotate first.
pub(super) const NEAR_EXPIRY: time::Duration = time::Duration::days(14);

/// Who is signed in, for the page header.
pub(super) struct Viewer<'a> {
    /// Their email.
    pub email: &'a str,
    /// Owner or admin: sees Workspace Settings' management and the audit log.
    pub manager: bool,
}

/// An HTML response.
pub(super) fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The whole page around `body`.
pub(super) fn page(title: &str, viewer: Option<&Viewer<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Heex" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        span.brand { "Heex" }
                        @if let Some(v) = viewer {
                            a href="/console/devices" { "Devices" }
                            a href="/console/keys" { "API Keys" }
                            a href="/console/add-device" { "Add device" }
                            a href="/console/settings" { "Workspace Settings" }
                            @if v.manager { a href="/console/audit" { "Audit log" } }
                            span.who { (v.email) }
                            form method="post" action="/console/signout" {
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An error page with one message.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    html_response(
        status,
        page(
            "Something went wrong",
            None,
            html! {
                p.error role="alert" { (message) }
                p { a href="/console/keys" { "Back to the console" } }
            },
        ),
    )
}

/// The page for an error of the domain code.
pub(super) fn api_error(e: ApiError) -> Response {
    error_page(e.status(), &e.body().message)
}

/// A time as RFC 3339 (UTC).
pub(super) fn when(t: OffsetDateTime) -> String {
    crate::store::access::rfc3339(t)
}

/// A time relative to `now`: "in 3 days", "5 minutes ago".
pub(super) fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let d = t - now;
    let secs = d.whole_seconds().unsigned_abs();
    let (n, unit) = match secs {
        0..=59 => {
            return if d.is_negative() {
                "just now".into()
            } else {
                "in under a minute".into()
            }
        }
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if d.is_negative() {
        format!("{n} {unit}{plural} ago")
    } else {
        format!("in {n} {unit}{plural}")
    }
}

fn time_cell(t: OffsetDateTime, now: OffsetDateTime) -> Markup {
    html! { time datetime=(when(t)) title=(when(t)) { (relative(t, now)) } }
}

/// The box a revealed secret (a new key, an invitation link) appears in; filled by the script.
pub(super) fn reveal_box() -> Markup {
    html! {
        section #reveal .reveal hidden aria-live="polite" aria-labelledby="reveal-title" {
            h2 #reveal-title { "New API key" }
            label for="reveal-secret" #reveal-label { "Key" }
            div.copyrow {
                input #reveal-secret .secret type="text" readonly autocomplete="off" spellcheck="false";
                button type="button" data-copy="reveal-secret" { "Copy" }
            }
            p #reveal-status role="status" {}
            p #reveal-note {}
            p { a #reveal-continue href="" { "Reload the list" } }
        }
        p #form-error .error role="alert" hidden {}
    }
}

/// The sign-in page.
pub(super) fn signin(message: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action="/console/signin" .card {
                label for="key" { "Your API key (admin scope)" }
                input #key name="key" type="password" required autocomplete="off" spellcheck="false";
                button type="submit" { "Sign in" }
            }
            p { "Or run " code { "heex console" } " for a one-time sign-in link. Keys with the "
                code { "enroll" } " scope cannot sign in." }
        },
    )
}

/// The page a one-time sign-in link opens: the script posts the token from the fragment.
pub(super) fn signin_link() -> Markup {
    page(
        "Signing in…",
        None,
        html! {
            form #link-form method="post" action="/console/signin/link" data-fragment="token" .card {
                input type="hidden" name="token" id="token";
                p { "Signing you in with your one-time link…" }
                button type="submit" { "Sign in" }
            }
            p { "A link works once, for a few minutes. " a href="/console/signin" { "Sign in with a key instead" } }
        },
    )
}

/// The API Keys page.
pub(super) fn keys(
    viewer: &Viewer<'_>,
    keys: &[KeyListEntry],
    all: bool,
    now: OffsetDateTime,
    flash: Option<&str>,
    warning: Option<&str>,
) -> Markup {
    page(
        "API Keys",
        Some(viewer),
        html! {
            @if let Some(w) = warning { p.error role="alert" { "Warning: " (w) } }
            @if let Some(f) = flash { p.flash role="status" { (f) } }
            @if viewer.manager {
                p {
                    @if all { a href="/console/keys" { "Show only my keys" } }
                    @else { a href="/console/keys?all=true" { "Show every member's keys" } }
                }
            }
            details.card open[keys.is_empty()] {
                summary { "Create New API Key" }
                form #create-key method="post" action="/console/keys" data-reveal="API key" {
                    label for="name" { "Name" }
                    input #name name="name" required maxlength="64" placeholder="docker-fleet-a";
                    label for="scope" { "Scope" }
                    select #scope name="scope" {
                        option value="enroll" { "enroll — only enrolls machines (for containers and scripts)" }
                        option value="admin" { "admin — manages your keys and signs in here" }
                    }
                    label for="expires" { "Expires in" }
                    select #expires name="expires_in_days" {
                        option value="7" { "7 days" }
                        option value="30" { "30 days" }
                        option value="90" selected { "90 days" }
                        option value="365" { "1 year" }
                    }
                    label for="max_uses" { "Max enrollments (optional)" }
                    input #max_uses name="max_uses" type="number" min="1" inputmode="numeric";
                    button type="submit" { "Create New API Key" }
                }
            }
            (reveal_box())
            div.scroll {
                table {
                    caption { @if all { "Every member's keys" } @else { "Your keys" } }
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Key id" }
                        @if all { th scope="col" { "Owner" } }
                        th scope="col" { "Scope" }
                        th scope="col" { "Created" }
                        th scope="col" { "Expires" }
                        th scope="col" { "Last used" }
                        th scope="col" { "Uses" }
                        th scope="col" { "Status" }
                        th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for k in keys { (key_row(viewer, k, all, now)) }
                    }
                }
            }
        },
    )
}

fn status_text(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Active => "active",
        KeyStatus::Expired => "expired",
        KeyStatus::Revoked => "revoked",
        KeyStatus::Exhausted => "used up",
    }
}

fn key_row(viewer: &Viewer<'_>, k: &KeyListEntry, all: bool, now: OffsetDateTime) -> Markup {
    let i = &k.info;
    let own = i.owner == viewer.email;
    let active = matches!(k.status, KeyStatus::Active | KeyStatus::Exhausted);
    let near = active && i.expires_at - now <= NEAR_EXPIRY;
    let id = i.id.as_str();
    html! {
        tr {
            td { (i.name) }
            td { code { (id) } }
            @if all { td { (i.owner) } }
            td { (i.scope.as_str()) }
            td { (time_cell(i.created_at, now)) }
            td class=[near.then_some("near")] {
                (time_cell(i.expires_at, now))
                @if near { " " span.badge { "expires soon" } }
            }
            td { @match i.last_used_at { Some(t) => (time_cell(t, now)), None => "never" } }
            td { (k.uses) " / " @match k.max_uses { Some(m) => (m), None => "∞" } }
            td { span class={"status " (status_text(k.status))} { (status_text(k.status)) } }
            td.actions {
                @if active && own {
                    form method="post" action={"/console/keys/" (id) "/copy"} data-reveal="API key" {
                        button type="submit" aria-label={"Copy key " (i.name)} { "Copy" }
                    }
                    form method="post" action={"/console/keys/" (id) "/rotate"} data-reveal="API key"
                        data-confirm={"Rotate " (i.name) "? A new key replaces it; the old one stops working after the overlap you chose."} {
                        label for={"overlap-" (id)} .visually-hidden { "Overlap for " (i.name) }
                        select id={"overlap-" (id)} name="overlap_secs" {
                            option value="0" { "no overlap" }
                            option value="3600" selected { "1 hour overlap" }
                            option value="86400" { "1 day overlap" }
                            option value="604800" { "7 days overlap" }
                        }
                        button type="submit" class=[near.then_some("primary")] { "Rotate" }
                    }
                }
                @if k.status != KeyStatus::Revoked && (own || viewer.manager) {
                    form method="post" action={"/console/keys/" (id) "/revoke"}
                        data-confirm={"Revoke " (i.name) " (" (id) ")? It stops working at once; machines already enrolled with it keep running."} {
                        button type="submit" .danger aria-label={"Revoke key " (i.name)} { "Revoke" }
                    }
                }
            }
        }
    }
}

/// A member row of Workspace Settings.
pub(super) struct MemberRow {
    /// Id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Joined.
    pub joined: OffsetDateTime,
    /// Keys they can use now.
    pub active_keys: u64,
    /// Unrevoked devices they enrolled.
    pub machines: usize,
}

/// Workspace Settings.
pub(super) fn settings(
    viewer: &Viewer<'_>,
    members: &[MemberRow],
    invitations: &[InvitationInfo],
    now: OffsetDateTime,
    flash: Option<&str>,
) -> Markup {
    page(
        "Workspace Settings",
        Some(viewer),
        html! {
            @if let Some(f) = flash { p.flash role="status" { (f) } }
            h2 { "Members" }
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Joined" }
                    th scope="col" { "Active keys" } th scope="col" { "Machines enrolled" }
                    @if viewer.manager { th scope="col" { "Actions" } }
                } }
                tbody { @for m in members { tr {
                    td { (m.email) } td { (m.role.as_str()) } td { (time_cell(m.joined, now)) }
                    td { (m.active_keys) } td { (m.machines) }
                    @if viewer.manager { td.actions {
                        @if m.email != viewer.email {
                            form method="post" action={"/console/members/" (m.id) "/remove"}
                                data-confirm={"Remove " (m.email) "? Their " (m.active_keys) " key"
                                    @if m.active_keys != 1 { "s" } " "
                                    @if m.active_keys != 1 { "are" } @else { "is" }
                                    " revoked; the " (m.machines) " machine" @if m.machines != 1 { "s" }
                                    " they enrolled keep" @if m.machines == 1 { "s" } " running."} {
                                button type="submit" .danger aria-label={"Remove " (m.email)} { "Remove" }
                            }
                        }
                    } }
                } } }
            } }
            @if viewer.manager {
                h2 { "Invite" }
                form #invite method="post" action="/console/invitations" data-reveal="invitation link" .card {
                    label for="email" { "Email" }
                    input #email name="email" type="email" required maxlength="254" autocomplete="off";
                    label for="role" { "Role" }
                    select #role name="role" {
                        option value="member" { "member" }
                        option value="admin" { "admin" }
                        option value="owner" { "owner" }
                    }
                    button type="submit" { "Invite" }
                }
                (reveal_box())
                h2 { "Pending invitations" }
                @if invitations.is_empty() { p { "None." } } @else {
                    div.scroll { table {
                        thead { tr {
                            th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Invited by" }
                            th scope="col" { "Expires" } th scope="col" { "Actions" }
                        } }
                        tbody { @for inv in invitations { tr {
                            td { (inv.email) } td { (inv.role.as_str()) } td { (inv.invited_by) }
                            td { (time_cell(inv.expires_at, now)) }
                            td.actions {
                                form method="post" action={"/console/invitations/" (inv.id) "/recreate"} data-reveal="invitation link"
                                    data-confirm={"Re-create the invitation of " (inv.email) "? You get a new link; the old one stops working."} {
                                    button type="submit" aria-label={"Re-create the invitation of " (inv.email)} { "Re-create" }
                                }
                                form method="post" action={"/console/invitations/" (inv.id) "/cancel"}
                                    data-confirm={"Cancel the invitation of " (inv.email) "? Its link stops working at once."} {
                                    button type="submit" .danger aria-label={"Cancel the invitation of " (inv.email)} { "Cancel" }
                                }
                            }
                        } } }
                    } }
                }
            }
        },
    )
}

/// The page an invitation link opens.
pub(super) fn join() -> Markup {
    page(
        "Join a workspace",
        None,
        html! {
            form #join method="post" action="/console/join" data-fragment="token" data-reveal="API key" data-manual .card {
                input type="hidden" name="token" id="token";
                p { "You were invited to a Heex workspace. Accepting makes you a member and gives you your first API key." }
                label for="key_name" { "Name of your first key" }
                input #key_name name="key_name" value="console" maxlength="64";
                button type="submit" { "Accept the invitation" }
            }
            (reveal_box())
        },
    )
}

/// A secret revealed without the script (a plain form post): shown once, with its note.
pub(super) fn reveal_page(
    viewer: Option<&Viewer<'_>>,
    what: &str,
    secret: &str,
    note: &str,
) -> Markup {
    page(
        &format!("Your {what}"),
        viewer,
        html! {
            label for="secret" { (what) }
            div.copyrow {
                input #secret .secret type="text" readonly value=(secret) autocomplete="off" spellcheck="false";
                button type="button" data-copy="secret" { "Copy" }
            }
            p { (note) }
            p { a href="/console/keys" { "Continue" } }
        },
    )
}

/// The audit log with its filter form.
pub(super) fn audit(
    viewer: &Viewer<'_>,
    events: &[AuditEvent],
    actor: &str,
    action: &str,
    since: &str,
    now: OffsetDateTime,
) -> Markup {
    let actions = [
        "",
        "key.",
        "key.create",
        "key.copy",
        "key.revoke",
        "key.rotate",
        "member.",
        "member.invite",
        "member.join",
        "member.remove",
        "invitation.cancel",
        "console.",
        "console.signin",
        "console.signout",
        "device.",
        "device.enroll",
        "device.revoke",
        "device.update",
        "device.delete",
    ];
    let periods = [
        ("", "any time"),
        ("1h", "last hour"),
        ("24h", "last 24 hours"),
        ("7d", "last 7 days"),
        ("30d", "last 30 days"),
    ];
    page(
        "Audit log",
        Some(viewer),
        html! {
            form method="get" action="/console/audit" .filters {
                label for="actor" { "Actor" }
                input #actor name="actor" value=(actor) placeholder="bob@example.com";
                label for="action" { "Action" }
                select #action name="action" {
                    @for a in actions {
                        option value=(a) selected[a == action] { @if a.is_empty() { "any" } @else { (a) } }
                    }
                }
                label for="since" { "Time" }
                select #since name="since" {
                    @for (v, l) in periods { option value=(v) selected[v == since] { (l) } }
                }
                button type="submit" { "Filter" }
            }
            div.scroll { table {
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" }
                    th scope="col" { "Target" } th scope="col" { "Details" }
                } }
                tbody { @for e in events { tr {
                    td { (time_cell(e.at, now)) } td { (e.actor) } td { code { (e.action) } }
                    td { code { (e.target) } } td { code.details { (e.details.to_string()) } }
                } } }
            } }
            @if events.is_empty() { p { "No events match." } }
        },
    )
}

/// What the add-device page shows for one enroll key.
pub(super) struct EnrollKey {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Uses.
    pub uses: u64,
    /// Limit.
    pub max_uses: Option<u64>,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

/// The Add device page: pick an enroll key, then copy the commands.
pub(super) fn add_device(
    viewer: &Viewer<'_>,
    keys: &[EnrollKey],
    server: &str,
    fingerprint: &str,
    now: OffsetDateTime,
) -> Markup {
    let since = now.unix_timestamp();
    let installer = format!(
        "sudo apt install ./heex_*.deb && sudo HEEX_API_KEY='{{KEY}}' heex-installer --systemd --server {server} --ca-fingerprint {fingerprint} --name \"$(hostname)\""
    );
    let docker = format!(
        "docker run -d --name heex-agent --restart unless-stopped -e HEEX_API_KEY='{{KEY}}' -e HEEX_SERVER={server} -e HEEX_CA_FINGERPRINT={fingerprint} -v heex-state:/var/lib/heex heex/agent"
    );
    let compose = format!(
        "services:\n  heex-agent:\n    image: heex/agent\n    restart: unless-stopped\n    environment:\n      HEEX_API_KEY: '{{KEY}}'\n      HEEX_SERVER: {server}\n      HEEX_CA_FINGERPRINT: {fingerprint}\n    volumes:\n      - heex-state:/var/lib/heex\nvolumes:\n  heex-state: {{}}\n"
    );
    page(
        "Add device",
        Some(viewer),
        html! {
            @if keys.is_empty() {
                p { "You have no usable enroll-scope key. " a href="/console/keys" { "Create one on the API Keys page" } " (scope “enroll”), then come back." }
            } @else {
                form #pick-key method="post" data-commands .card {
                    label for="enroll-key" { "Enroll-scope key" }
                    select #enroll-key name="key" data-action-template="/console/keys/{ID}/copy" {
                        @for k in keys {
                            option value=(k.id) {
                                (k.name) " (" (k.id) ", " (k.uses) "/" @match k.max_uses { Some(m) => (m), None => "∞" }
                                " uses, expires " (relative(k.expires_at, now)) ")"
                            }
                        }
                    }
                    button type="submit" { "Show the commands with this key" }
                    p { "Fetching the commands copies the key again (recorded in the audit log)." }
                }
                p #form-error .error role="alert" hidden {}
                section #commands hidden aria-live="polite" {
                    (command_box("cmd-installer", "Debian package and systemd", &installer))
                    (command_box("cmd-docker", "docker run", &docker))
                    (command_box("cmd-compose", "Docker Compose", &compose))
                    h2 { "Your new device" }
                    p #wait-status .waiting role="status" data-since=(since) {
                        "Waiting for a device to enroll with this key and connect…"
                    }
                }
            }
            p { "Or create a new enroll key on the " a href="/console/keys" { "API Keys" } " page." }
        },
    )
}

fn command_box(id: &str, title: &str, template: &str) -> Markup {
    html! {
        h2 { (title) }
        pre.command { code id=(id) data-template=(template) {} }
        button type="button" data-copy=(id) aria-label={"Copy the " (title) " command"} { "Copy" }
    }
}
