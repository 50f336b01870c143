//! The gateway's [`DeviceDirectory`] over the cloud's [`Store`].

use std::sync::Arc;

use heex_proto::api::Facts;
use heex_proto::DeviceId;
use time::OffsetDateTime;

use super::{DeviceDirectory, DeviceNotLive, DeviceStatus, Seen, StoredReports};
use crate::store::{IssuedCert, Store, StoreError};

impl DeviceDirectory for Store {
    async fn device_status(&self, id: &DeviceId) -> anyhow::Result<Option<DeviceStatus>> {
        Ok(Store::device_status(self, id).await?)
    }

    async fn record_seen(
        &self,
        id: &DeviceId,
        facts: Option<&Facts>,
        agent_version: Option<&str>,
        at: OffsetDateTime,
        connection: &str,
        claim: bool,
    ) -> anyhow::Result<Seen> {
        Ok(Store::record_connected(self, id, facts, agent_version, at, connection, claim).await?)
    }

    async fn record_disconnected(&self, id: &DeviceId, connection: &str) -> anyhow::Result<()> {
        Ok(Store::record_disconnected(self, id, connection).await?)
    }

    async fn record_renewal(
        &self,
        id: &DeviceId,
        from_serial: &str,
        cert: IssuedCert,
    ) -> anyhow::Result<bool> {
        let now = OffsetDateTime::now_utc();
        Ok(Store::record_renewal(self, id, from_serial, cert, now).await?)
    }

    async fn store_reports(
        &self,
        id: &DeviceId,
        reports: Arc<[(u64, String)]>,
    ) -> anyhow::Result<StoredReports> {
        match Store::store_reports(self, id, reports, OffsetDateTime::now_utc()).await {
            Err(StoreError::DeviceNotLive(_)) => Err(DeviceNotLive.into()),
            r => Ok(r?),
        }
    }

    async fn highest_report_seq(&self, id: &DeviceId) -> anyhow::Result<u64> {
        Ok(Store::highest_report_seq(self, id).await?)
    }
}

impl crate::store::DeviceRecord {
    /// [`Self::info`] with the store's connection mark and what this process's registry
    /// knows of the device's live session.
    pub fn live_info(&self, registry: &super::SessionRegistry) -> heex_proto::api::DeviceInfo {
        let session_serial = registry.session_serial(&self.id);
        heex_proto::api::DeviceInfo {
            session_serial,
            ..self.info(self.connected)
        }
    }
}
