//! What the host's operator does with the data directory itself, beside `serve` or
//! without it: a break-glass API key for a member (when every admin key of a workspace is
//! revoked or expired, nothing else can make one) and the member list. Holding the data
//! directory (its server secret) is the operator's credential; the audit log records the
//! key as an operator action, not a member's.

use std::io::Write;

use heex_proto::{ApiKey, KeyId};
use time::OffsetDateTime;

use crate::cli::{KeyCreateArgs, MembersListArgs};
use crate::datadir::DataDir;
use crate::error::Error;
use crate::store::access::rfc3339;
use crate::store::ops::{OperatorKey, OperatorKeyOutcome};
use crate::store::{PageRequest, Store};

fn stdout_error(e: std::io::Error) -> Error {
    Error::file("<stdout>", e)
}

/// `heex-cloud keys create`: a key for a current member, printed once.
pub async fn create_key(args: KeyCreateArgs) -> Result<(), Error> {
    heex_proto::text::check_email("--member", &args.member)
        .map_err(|e| Error::Usage(e.to_string()))?;
    heex_proto::text::check_name("--name", &args.name, 64)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let dir = DataDir::of(&args.dir);
    let (store, secret) = dir.open_checked().await?;
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let lifetime = time::Duration::try_from(args.expires_in)
        .map_err(|e| Error::Usage(format!("--expires-in: {e}")))?;
    let host = crate::host_name();
    let key = OperatorKey {
        id: KeyId::generate(),
        name: args.name.clone(),
        scope: args.scope,
        created_at: now,
        expires_at: now + lifetime,
        actor: format!("operator on {host}"),
    };
    let made = store
        .operator_create_key(&args.workspace, &args.member, key.clone())
        .await;
    store.close().await;
    match made? {
        OperatorKeyOutcome::NoWorkspace => Err(Error::Usage(format!(
            "no workspace is named {:?}; give --workspace one that exists (the first is \
             \"default\" unless init was given --workspace)",
            args.workspace
        ))),
        OperatorKeyOutcome::NoMember => Err(Error::Usage(format!(
            "{} is not a current member of workspace {:?} (a removed member gets no key); \
             `heex-cloud members list --workspace {}` shows who is",
            args.member, args.workspace, args.workspace
        ))),
        OperatorKeyOutcome::Created(member) => {
            let full = ApiKey::derive(secret.as_bytes(), key.id.clone());
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "API key {} for {} ({}) in workspace {}, scope {}, expires {}:",
                key.id,
                member.email,
                member.role.as_str(),
                args.workspace,
                key.scope.as_str(),
                rfc3339(key.expires_at)
            )
            .and_then(|()| writeln!(out, "{}", full.expose()))
            .and_then(|()| {
                writeln!(
                    out,
                    "Keep it secret: it is shown once. The audit log records it as made by {}.",
                    key.actor
                )
            })
            .and_then(|()| out.flush())
            .map_err(stdout_error)
        }
    }
}

/// `heex-cloud members list`: every member of a workspace, removed ones included.
pub async fn list_members(args: MembersListArgs) -> Result<(), Error> {
    let dir = DataDir::of(&args.dir);
    let (store, _) = dir.open_checked().await?;
    let listed = print_members(&store, &args.workspace).await;
    store.close().await;
    listed
}

async fn print_members(store: &Store, workspace: &str) -> Result<(), Error> {
    let Some(ws) = store.workspace_named(workspace).await? else {
        return Err(Error::Usage(format!(
            "no workspace is named {workspace:?} (the first is \"default\" unless init was \
             given --workspace)"
        )));
    };
    let now = OffsetDateTime::now_utc();
    let mut out = std::io::stdout().lock();
    writeln!(out, "EMAIL\tROLE\tJOINED\tUSABLE KEYS\tREMOVED").map_err(stdout_error)?;
    let mut page = PageRequest::first(1000);
    loop {
        let got = store.list_members(&ws, now, page.clone()).await?;
        for m in &got.items {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                m.email,
                m.role.as_str(),
                rfc3339(m.created_at),
                m.active_keys,
                m.removed_at.map(rfc3339).unwrap_or_else(|| "-".to_owned())
            )
            .map_err(stdout_error)?;
        }
        match got.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    out.flush().map_err(stdout_error)
}
