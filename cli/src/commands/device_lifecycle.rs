//! `heex devices revoke|rename|label|delete`.

use std::collections::BTreeMap;

use heex_proto::api::{DeviceInfo, UpdateDeviceRequest};
use heex_proto::DeviceId;
use serde_json::json;

use crate::context::Ctx;
use crate::display::safe;
use crate::error::CliError;

fn device_id(id: &str) -> Result<DeviceId, CliError> {
    id.trim()
        .parse()
        .map_err(|e| CliError::Usage(format!("{e}")))
}

/// `heex devices revoke ID`.
pub fn revoke(ctx: &mut Ctx<'_>, id: &str) -> Result<(), CliError> {
    let id = device_id(id)?;
    let (_, client) = ctx.client()?;
    let reply = client.post::<_, DeviceInfo>(&format!("/v1/devices/{id}/revoke"), &json!({}))?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    ctx.println(&format!(
        "Revoked device {id} ({}). Its session was closed; it can no longer connect or renew. \
         To use the machine again, reinstall it with heex-installer --force and a new API key.",
        safe(&reply.value.name)
    ))
}

/// `heex devices rename ID NAME`.
pub fn rename(ctx: &mut Ctx<'_>, id: &str, name: &str) -> Result<(), CliError> {
    let id = device_id(id)?;
    let (_, client) = ctx.client()?;
    let reply = client.patch::<_, DeviceInfo>(
        &format!("/v1/devices/{id}"),
        &UpdateDeviceRequest {
            name: Some(name.to_owned()),
            labels: None,
        },
    )?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    ctx.println(&format!("Renamed device {id} to {:?}.", reply.value.name))
}

/// What `heex devices label` was asked to do to each key: set it, or remove it (`None`).
fn label_changes(args: &[String]) -> Result<BTreeMap<String, Option<String>>, CliError> {
    let mut changes = BTreeMap::new();
    for arg in args {
        if let Some((k, v)) = arg.split_once('=') {
            changes.insert(k.to_owned(), Some(v.to_owned()));
        } else if let Some(k) = arg.strip_suffix('-').filter(|k| !k.is_empty()) {
            changes.insert(k.to_owned(), None);
        } else {
            return Err(CliError::Usage(format!(
                "{arg:?} is neither KEY=VALUE (to set a label) nor KEY- (to remove one)"
            )));
        }
    }
    Ok(changes)
}

/// `heex devices label ID KEY=VALUE… KEY-…`: merges into the device's current labels.
pub fn label(ctx: &mut Ctx<'_>, id: &str, args: &[String]) -> Result<(), CliError> {
    let id = device_id(id)?;
    let changes = label_changes(args)?;
    let (_, client) = ctx.client()?;
    let current = client.get::<DeviceInfo>(&format!("/v1/devices/{id}"), &[])?;
    let mut labels = current.value.labels;
    for (k, v) in changes {
        match v {
            Some(v) => labels.insert(k, v),
            None => labels.remove(&k),
        };
    }
    let reply = client.patch::<_, DeviceInfo>(
        &format!("/v1/devices/{id}"),
        &UpdateDeviceRequest {
            name: None,
            labels: Some(labels),
        },
    )?;
    if ctx.json {
        return ctx.print_json(&reply.raw);
    }
    let shown = if reply.value.labels.is_empty() {
        "none".to_owned()
    } else {
        reply
            .value
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", safe(k), safe(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    ctx.println(&format!("Labels of device {id}: {shown}."))
}

/// `heex devices delete ID` (revoked devices only).
pub fn delete(ctx: &mut Ctx<'_>, id: &str) -> Result<(), CliError> {
    let id = device_id(id)?;
    let (_, client) = ctx.client()?;
    client.delete(&format!("/v1/devices/{id}"))?;
    if ctx.json {
        return ctx.print_json(&json!({"deleted": id}));
    }
    ctx.println(&format!("Deleted device {id}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_arguments() {
        let c = label_changes(&["site=lab".into(), "old-".into(), "empty=".into()]).unwrap();
        assert_eq!(c["site"], Some("lab".into()));
        assert_eq!(c["old"], None);
        assert_eq!(c["empty"], Some(String::new()));
        let e = label_changes(&["oops".into()]).unwrap_err();
        assert_eq!(e.exit_code(), heex_proto::exit::USAGE);
        assert!(label_changes(&["-".into()]).is_err());
    }
}
