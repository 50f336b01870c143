//! The Devices pages' HTML.

use heex_proto::api::{DeviceInfo, ReportInfo};
use maud::{html, Markup};
use time::OffsetDateTime;

use super::{page, relative, time_cell, Viewer};
use crate::console::devices::{ListForm, Listed, MAX_BULK};

/// A certificate expiring within this long is highlighted.
const CERT_NEAR: time::Duration = time::Duration::days(7);
/// Characters of a report's content shown in a device's page.
const REPORT_CHARS: usize = 400;

fn counts(listed: &Listed) -> Markup {
    let s = &listed.summary;
    let days = s.expiring_within_secs / 86_400;
    html! {
        span { strong { (s.total) } " devices" } " · "
        span { strong { (s.connected) } " connected" } " · "
        span { strong { (s.expiring_soon) } " certificates expiring within " (days) " days" } " · "
        span { strong { (s.revoked) } " revoked" }
    }
}

fn status_badge(d: &DeviceInfo) -> Markup {
    html! {
        @if d.revoked_at.is_some() { span.status.revoked { "revoked" } }
        @else if d.connected { span.status.connected { "connected" } }
        @else { span.status.offline { "offline" } }
    }
}

fn labels(d: &DeviceInfo) -> Markup {
    html! {
        @for (k, v) in &d.labels {
            span.label { (k) @if !v.is_empty() { "=" (v) } } " "
        }
    }
}

fn os_arch(d: &DeviceInfo) -> Markup {
    let f = d.facts.as_ref();
    let os = f.and_then(|f| f.os.as_deref());
    let version = f.and_then(|f| f.os_version.as_deref());
    let arch = f.and_then(|f| f.arch.as_deref());
    html! {
        @match (os, version) {
            (Some(o), Some(v)) => { (o) " " (v) }
            (Some(o), None) => { (o) }
            _ => { "—" }
        }
        @if let Some(a) = arch { br; small { (a) } }
    }
}

fn cert_cell(d: &DeviceInfo, now: OffsetDateTime) -> Markup {
    let near = d.revoked_at.is_none() && d.certificate_expires_at - now <= CERT_NEAR;
    html! {
        td data-live class=[near.then_some("near")] {
            (time_cell(d.certificate_expires_at, now))
            @if near { " " span.badge { "soon" } }
        }
    }
}

fn row(d: &DeviceInfo, now: OffsetDateTime) -> Markup {
    let id = d.id.as_str();
    html! {
        tr data-id=(id) {
            td { input type="checkbox" name="id" value=(id) form="bulk" aria-label={"Select " (d.name)}; }
            td { a href={"/console/devices/" (id)} { (d.name) } br; small { code { (id) } } }
            td data-live { (labels(d)) }
            td data-live { (status_badge(d)) }
            td data-live { @match d.last_seen_at { Some(t) => (time_cell(t, now)), None => "never" } }
            td data-live { (os_arch(d)) }
            td data-live { @match &d.agent_version { Some(v) => (v), None => "—" } }
            (cert_cell(d, now))
            td { (d.enrolled_by_member) br; small { code { (d.enrolled_by_key.as_str()) } } }
        }
    }
}

fn rows(listed: &Listed, now: OffsetDateTime) -> Markup {
    html! {
        @match &listed.page {
            Ok(p) if p.devices.is_empty() => {
                tr.empty { td colspan="9" { "No devices match." } }
            }
            Ok(p) => { @for d in &p.devices { (row(d, now)) } }
            Err(_) => { tr.empty { td colspan="9" { "—" } } }
        }
    }
}

/// The part of the list the page's script refreshes: the counts and the rows.
pub(crate) fn live_part(listed: &Listed, now: OffsetDateTime) -> Markup {
    html! {
        div {
            p #device-counts { (counts(listed)) }
            table { tbody #device-rows { (rows(listed, now)) } }
        }
    }
}

const SORTS: [(&str, &str); 6] = [
    ("name", "Name, A to Z"),
    ("-name", "Name, Z to A"),
    ("-enrolled", "Newest first"),
    ("enrolled", "Oldest first"),
    ("-last_seen", "Heard from most recently"),
    ("last_seen", "Silent the longest"),
];

/// The Devices page.
pub(crate) fn list(
    viewer: &Viewer<'_>,
    listed: &Listed,
    form: &ListForm,
    flash: Option<&str>,
    now: OffsetDateTime,
) -> Markup {
    let next = listed
        .page
        .as_ref()
        .ok()
        .and_then(|p| p.next_after.as_deref());
    let sort = match form.sort.trim() {
        "" => "name",
        s => s,
    };
    page(
        "Devices",
        Some(viewer),
        html! {
            @if let Some(f) = flash { p.flash role="status" { (f) } }
            p #device-counts aria-live="polite" { (counts(listed)) }
            form method="get" action="/console/devices" .filters role="search" {
                div { label for="search" { "Name or id" }
                      input #search name="search" type="search" value=(form.search) maxlength="200" placeholder="robot-7"; }
                div { label for="state" { "Session" }
                      select #state name="state" {
                          option value="" selected[form.state.is_empty()] { "any" }
                          option value="connected" selected[form.state == "connected"] { "connected" }
                          option value="disconnected" selected[form.state == "disconnected"] { "offline" }
                      } }
                div { label for="show" { "Revoked" }
                      select #show name="show" {
                          option value="" selected[form.show.is_empty()] { "hide revoked" }
                          option value="revoked" selected[form.show == "revoked"] { "only revoked" }
                          option value="all" selected[form.show == "all"] { "show all" }
                      } }
                div { label for="label" { "Labels" }
                      input #label name="label" value=(form.label) placeholder="site=lyon,!retired"; }
                div { label for="sort" { "Order" }
                      select #sort name="sort" {
                          @for (v, l) in SORTS { option value=(v) selected[v == sort] { (l) } }
                      } }
                button type="submit" { "Filter" }
            }
            @if let Err(e) = &listed.page { p.error role="alert" { (e.body().message) } }
            form #bulk method="post" action="/console/devices/bulk" .filters
                data-confirm="Revoke the {n} selected devices? Their sessions close at once and they can no longer connect; this cannot be undone."
                data-confirm-when="op=revoke" data-need-selection="id" {
                input type="hidden" name="search" value=(form.search);
                input type="hidden" name="state" value=(form.state);
                input type="hidden" name="show" value=(form.show);
                input type="hidden" name="filter_label" value=(form.label);
                input type="hidden" name="sort" value=(form.sort);
                div { label for="op" { "With the selected devices" }
                      select #op name="op" {
                          option value="label" { "set a label" }
                          option value="unlabel" { "remove a label" }
                          option value="revoke" { "revoke" }
                      } }
                div { label for="bulk-label" { "Label" }
                      input #bulk-label name="label" placeholder="site=lyon (set) or site (remove)"; }
                button type="submit" { "Apply" }
                small { "At most " (MAX_BULK) " devices at a time." }
            }
            p #form-error .error role="alert" hidden {}
            div.scroll { table #devices {
                caption.visually-hidden { "Devices" }
                thead { tr {
                    th scope="col" { input #select-all type="checkbox" data-select-all="id" aria-label="Select every device on this page"; }
                    th scope="col" { "Name" } th scope="col" { "Labels" } th scope="col" { "Session" }
                    th scope="col" { "Last seen" } th scope="col" { "OS / arch" } th scope="col" { "Agent" }
                    th scope="col" { "Certificate expires" } th scope="col" { "Enrolled by" }
                } }
                tbody #device-rows data-live-src=(form.href(Some(&form.after), Some("rows"))) data-live-rows {
                    (rows(listed, now))
                }
            } }
            nav.pager aria-label="Pages" {
                @if !form.after.is_empty() { a href=(form.href(None, None)) { "First page" } " " }
                @if let Some(n) = next { a href=(form.href(Some(n), None)) rel="next" { "Next page" } }
            }
        },
    )
}

fn bytes(n: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    #[allow(clippy::cast_precision_loss)] // a display figure
    let n = n as f64;
    if n >= GIB {
        format!("{:.1} GiB", n / GIB)
    } else {
        format!("{:.0} MiB", n / MIB)
    }
}

/// The part of a device's page its script refreshes, as the refresh answers it.
pub(crate) fn status_part(d: &DeviceInfo, now: OffsetDateTime) -> Markup {
    html! { dl { (status(d, now)) } }
}

/// A device's session and last seen.
fn status(d: &DeviceInfo, now: OffsetDateTime) -> Markup {
    html! {
        div { dt { "Session" } dd { (status_badge(d))
            @if let Some(s) = &d.session_serial { " " small { "certificate " code { (s) } } } } }
        div { dt { "Last seen" } dd { @match d.last_seen_at { Some(t) => (time_cell(t, now)), None => "never" } } }
    }
}

/// One device's page.
pub(crate) fn detail(
    viewer: &Viewer<'_>,
    d: &DeviceInfo,
    reports: &[ReportInfo],
    flash: Option<&str>,
    now: OffsetDateTime,
) -> Markup {
    let id = d.id.as_str();
    let f = d.facts.clone().unwrap_or_default();
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".to_owned());
    let labels_text: String = d
        .labels
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                format!("{k}\n")
            } else {
                format!("{k}={v}\n")
            }
        })
        .collect();
    page(
        &d.name,
        Some(viewer),
        html! {
            @if let Some(m) = flash { p.flash role="status" { (m) } }
            p { a href="/console/devices" { "All devices" } }
            dl #device-status .facts aria-live="polite" data-live-src={"/console/devices/" (id) "?part=status"} {
                (status(d, now))
            }
            h2 { "Identity" }
            dl.facts {
                div { dt { "Device id" } dd { code { (id) } } }
                div { dt { "SPIFFE ID" } dd { code { (d.spiffe_id.to_string()) } } }
                div { dt { "Enrolled" } dd { (time_cell(d.enrolled_at, now)) " by " (d.enrolled_by_member)
                      " with key " code { (d.enrolled_by_key.as_str()) } } }
                div { dt { "Certificate" } dd { "serial " code { (d.certificate_serial) } ", expires " (time_cell(d.certificate_expires_at, now)) } }
                div { dt { "Agent version" } dd { @match &d.agent_version { Some(v) => (v), None => "—" } } }
                @if let Some(t) = d.revoked_at { div { dt { "Revoked" } dd { (time_cell(t, now)) } } }
            }
            h2 { "Facts" }
            dl.facts {
                div { dt { "Host name" } dd { (text(&f.hostname)) } }
                div { dt { "Operating system" } dd { (text(&f.os)) " " (f.os_version.clone().unwrap_or_default()) } }
                div { dt { "Kernel" } dd { (text(&f.kernel)) } }
                div { dt { "Architecture" } dd { (text(&f.arch)) } }
                div { dt { "CPUs" } dd { @match f.cpus { Some(n) => (n), None => "—" } } }
                div { dt { "Memory" } dd { @match (f.memory_available_bytes, f.memory_total_bytes) {
                    (Some(a), Some(t)) => { (bytes(a)) " free of " (bytes(t)) }
                    (None, Some(t)) => { (bytes(t)) }
                    _ => { "—" } } } }
                div { dt { "Disk" } dd { @match (f.disk_available_bytes, f.disk_total_bytes) {
                    (Some(a), Some(t)) => { (bytes(a)) " free of " (bytes(t)) }
                    (None, Some(t)) => { (bytes(t)) }
                    _ => { "—" } } } }
                div { dt { "Up since" } dd { @match f.uptime_secs.and_then(|s| i64::try_from(s).ok()) {
                    Some(s) => (relative(now - time::Duration::seconds(s), now)),
                    None => "—" } } }
            }
            @if d.revoked_at.is_none() {
                h2 { "Name and labels" }
                form method="post" action={"/console/devices/" (id) "/rename"} .card {
                    label for="name" { "Name" }
                    input #name name="name" value=(d.name) required maxlength="128";
                    button type="submit" { "Rename" }
                }
                form method="post" action={"/console/devices/" (id) "/labels"} .card {
                    label for="labels" { "Labels, one key=value per line" }
                    textarea #labels name="labels" rows="4" spellcheck="false" { (labels_text) }
                    button type="submit" { "Save labels" }
                }
            } @else if !d.labels.is_empty() {
                h2 { "Labels" }
                p { (labels(d)) }
            }
            h2 { "Recent reports" }
            @if reports.is_empty() { p { "No reports yet." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Seq" } th scope="col" { "Received" } th scope="col" { "Content" } } }
                    tbody { @for r in reports { tr {
                        td { (r.seq) } td { (time_cell(r.received_at, now)) }
                        td { code.details { (clip(&r.payload.to_string())) } }
                    } } }
                } }
            }
            h2 { "Danger zone" }
            @if d.revoked_at.is_none() {
                form method="post" action={"/console/devices/" (id) "/revoke"}
                    data-confirm={"Revoke " (d.name) "? Its session closes at once and it can no longer connect or renew its certificate; this cannot be undone."} {
                    button type="submit" .danger { "Revoke this device" }
                }
            } @else if viewer.manager {
                form method="post" action={"/console/devices/" (id) "/delete"}
                    data-confirm={"Delete the record of " (d.name) " and its reports? This cannot be undone."} {
                    button type="submit" .danger { "Delete this device's record" }
                }
            }
        },
    )
}

fn clip(s: &str) -> String {
    if s.chars().count() <= REPORT_CHARS {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(REPORT_CHARS).collect();
    out.push('…');
    out
}
