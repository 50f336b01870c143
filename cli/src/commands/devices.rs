//! `heex devices list|show` (revoke, rename, label, delete: [`super::device_lifecycle`]).

use heex_proto::api::{DeviceInfo, DevicePage, DeviceSummary, Facts, MAX_PAGE_LIMIT};
use heex_proto::DeviceId;
use time::OffsetDateTime;

use crate::cli::{DevicesCommand, DevicesListArgs};
use crate::context::Ctx;
use crate::error::CliError;
use crate::paging::{print_pages, JsonForm, Listing};
use crate::table::{bytes, fields, Clock, Table};

/// Runs a `heex devices` subcommand.
pub fn run(ctx: &mut Ctx<'_>, cmd: &DevicesCommand) -> Result<(), CliError> {
    match cmd {
        DevicesCommand::List(args) => list(ctx, args),
        DevicesCommand::Count { expiring_within } => count(ctx, *expiring_within),
        DevicesCommand::Show { id } => show(ctx, id),
        DevicesCommand::Revoke { id } => super::device_lifecycle::revoke(ctx, id),
        DevicesCommand::Rename { id, name } => super::device_lifecycle::rename(ctx, id, name),
        DevicesCommand::Label { id, labels } => super::device_lifecycle::label(ctx, id, labels),
        DevicesCommand::Delete { id } => super::device_lifecycle::delete(ctx, id),
    }
}

fn list(ctx: &mut Ctx<'_>, args: &DevicesListArgs) -> Result<(), CliError> {
    let query = list_query(args, ctx.clock.now)?;
    let (_, client) = ctx.client()?;
    let json = match (args.jsonl, ctx.json) {
        (true, _) => Some(JsonForm::Lines),
        (false, true) => Some(JsonForm::Array),
        (false, false) => None,
    };
    let listing = Listing {
        json,
        empty: if query.is_empty() {
            "No devices enrolled."
        } else {
            "No matching devices."
        },
        table: device_table,
    };
    let max = (!args.all).then_some(u64::from(args.limit));
    let more = print_pages::<DevicePage>(
        ctx,
        &client,
        "/v1/devices",
        &query,
        args.limit,
        max,
        &listing,
    )?;
    if more {
        let hint = if args.limit < MAX_PAGE_LIMIT {
            format!("more devices: use --all, or --limit up to {MAX_PAGE_LIMIT}")
        } else {
            "more devices: use --all".to_owned()
        };
        eprintln!("{hint}");
    }
    Ok(())
}

/// The filters and order of `heex devices list` as `GET /v1/devices` parameters.
pub fn list_query(
    args: &DevicesListArgs,
    now: OffsetDateTime,
) -> Result<Vec<(&'static str, String)>, CliError> {
    let mut q = Vec::new();
    if args.connected || args.disconnected {
        q.push(("connected", args.connected.to_string()));
    }
    if args.revoked || args.active {
        q.push(("revoked", args.revoked.to_string()));
    }
    let labels: Vec<&str> = args
        .label
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if !labels.is_empty() {
        q.push(("label", labels.join(",")));
    }
    for (name, value) in [
        ("search", &args.search),
        ("enrolled_by", &args.enrolled_by),
        ("sort", &args.sort),
    ] {
        if let Some(v) = value {
            q.push((name, v.clone()));
        }
    }
    if let Some(k) = &args.key {
        q.push(("key", super::key_id_arg(k)?.to_string()));
    }
    if let Some(t) = &args.cert_expires_before {
        let at = super::time_arg("--cert-expires-before", t, now, 1)?;
        q.push(("cert_expires_before", at));
    }
    if let Some(t) = &args.last_seen_before {
        let at = super::time_arg("--last-seen-before", t, now, -1)?;
        q.push(("last_seen_before", at));
    }
    Ok(q)
}

/// `heex devices count`.
fn count(ctx: &mut Ctx<'_>, expiring_within: u32) -> Result<(), CliError> {
    let (_, client) = ctx.client()?;
    let reply = client.get::<DeviceSummary>(
        "/v1/devices/summary",
        &[("expiring_within_days", expiring_within.to_string())],
    )?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    let s = reply.value;
    let days = s.expiring_within_secs / 86_400;
    let window = if days == 1 {
        "1 day".to_owned()
    } else {
        format!("{days} days")
    };
    let text = fields(&[
        ("Total", s.total.to_string()),
        ("Connected", s.connected.to_string()),
        (
            "Expiring soon",
            format!("{} (certificate expires within {window})", s.expiring_soon),
        ),
        ("Revoked", s.revoked.to_string()),
    ]);
    ctx.print(&text)
}

/// A device's state in one word or two.
fn state(d: &DeviceInfo, clock: &Clock) -> String {
    match d.revoked_at {
        Some(at) => format!("revoked {}", clock.ago(at)),
        None if d.connected => "connected".into(),
        None => "offline".into(),
    }
}

/// The human table of devices.
pub fn device_table(devices: &[DeviceInfo], clock: &Clock) -> String {
    let mut table = Table::new([
        "ID",
        "NAME",
        "STATE",
        "LAST SEEN",
        "ENROLLED",
        "ENROLLED BY",
        "CERT EXPIRES",
    ]);
    for d in devices {
        table.row(vec![
            d.id.to_string(),
            d.name.clone(),
            state(d, clock),
            clock.ago_or_never(d.last_seen_at),
            clock.ago(d.enrolled_at),
            d.enrolled_by_member.clone(),
            clock.expiry(d.certificate_expires_at),
        ]);
    }
    table.render()
}

fn show(ctx: &mut Ctx<'_>, id: &str) -> Result<(), CliError> {
    let id: DeviceId = id
        .trim()
        .parse()
        .map_err(|e| CliError::Usage(format!("{e}")))?;
    let (_, client) = ctx.client()?;
    let reply = client.get::<DeviceInfo>(&format!("/v1/devices/{id}"), &[])?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    let text = describe(&reply.value, &ctx.clock);
    ctx.print(&text)
}

/// The human form of one device, with its facts.
pub fn describe(d: &DeviceInfo, clock: &Clock) -> String {
    let labels = if d.labels.is_empty() {
        "none".to_owned()
    } else {
        d.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut pairs = vec![
        ("Device", d.id.to_string()),
        ("Name", d.name.clone()),
        ("State", state(d, clock)),
        (
            "Last seen",
            d.last_seen_at
                .map_or_else(|| "never".to_owned(), |t| clock.both_ago(t)),
        ),
        ("SPIFFE ID", d.spiffe_id.to_string()),
        ("Labels", labels),
        ("Enrolled", clock.both_ago(d.enrolled_at)),
        (
            "Enrolled by",
            format!("{} (API key {})", d.enrolled_by_member, d.enrolled_by_key),
        ),
        (
            "Cert expires",
            format!(
                "{} ({})",
                clock.local(d.certificate_expires_at),
                clock.expiry(d.certificate_expires_at)
            ),
        ),
    ];
    if !d.certificate_serial.is_empty() {
        pairs.push(("Cert serial", d.certificate_serial.clone()));
    }
    if let Some(serial) = &d.session_serial {
        let which = if *serial == d.certificate_serial {
            "current certificate"
        } else {
            "previous certificate, superseded by a renewal"
        };
        pairs.push(("Session cert", format!("{serial} ({which})")));
    }
    if let Some(f) = &d.facts {
        pairs.extend(facts(f));
    }
    fields(&pairs)
}

fn facts(f: &Facts) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(h) = &f.hostname {
        out.push(("Hostname", h.clone()));
    }
    let os = [&f.os, &f.os_version]
        .iter()
        .filter_map(|s| s.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    if !os.is_empty() {
        out.push(("OS", os));
    }
    if let Some(k) = &f.kernel {
        out.push(("Kernel", k.clone()));
    }
    match (&f.arch, f.cpus) {
        (Some(a), Some(n)) => out.push(("CPU", format!("{a}, {n} CPUs"))),
        (Some(a), None) => out.push(("CPU", a.clone())),
        (None, Some(n)) => out.push(("CPU", format!("{n} CPUs"))),
        (None, None) => {}
    }
    if let (Some(avail), Some(total)) = (f.memory_available_bytes, f.memory_total_bytes) {
        out.push((
            "Memory",
            format!("{} free of {}", bytes(avail), bytes(total)),
        ));
    }
    if let (Some(avail), Some(total)) = (f.disk_available_bytes, f.disk_total_bytes) {
        out.push(("Disk", format!("{} free of {}", bytes(avail), bytes(total))));
    }
    if let Some(up) = f.uptime_secs {
        let up = humantime::format_duration(std::time::Duration::from_secs(up - up % 60));
        out.push(("Uptime", up.to_string()));
    }
    out
}
