//! `heex reports list`: a device's stored reports, oldest first.

use heex_proto::api::ReportPage;
use heex_proto::DeviceId;

use crate::cli::ReportsCommand;
use crate::context::Ctx;
use crate::error::CliError;
use crate::table::Table;

/// Runs a `heex reports` subcommand.
pub fn run(ctx: &mut Ctx<'_>, cmd: &ReportsCommand) -> Result<(), CliError> {
    match cmd {
        ReportsCommand::List {
            device,
            after,
            limit,
        } => list(ctx, device, *after, *limit),
    }
}

fn list(ctx: &mut Ctx<'_>, device: &str, after: u64, limit: u32) -> Result<(), CliError> {
    let id: DeviceId = device
        .trim()
        .parse()
        .map_err(|e| CliError::Usage(format!("{e}")))?;
    let (_, client) = ctx.client()?;
    let reply = client.get::<ReportPage>(
        &format!("/v1/devices/{id}/reports"),
        &[("after", after.to_string()), ("limit", limit.to_string())],
    )?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    let page = &reply.value;
    if page.reports.is_empty() {
        return ctx.println(&format!("No reports from {id} after {after}."));
    }
    let mut table = Table::new(["SEQ", "RECEIVED", "PAYLOAD"]);
    for r in &page.reports {
        table.row(vec![
            r.seq.to_string(),
            ctx.clock.ago(r.received_at),
            r.payload.to_string(),
        ]);
    }
    let mut text = table.render();
    if let Some(next) = page.next_after {
        text.push_str(&format!(
            "More reports: heex reports list --device {id} --after {next}\n"
        ));
    }
    ctx.print(&text)
}
