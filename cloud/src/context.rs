//! What every API and console handler shares: the store, the CAs, the server secret, the
//! live sessions and the enrollment settings.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::datadir::ServerSecret;
use crate::gateway::SessionRegistry;
use crate::store::Store;

/// Where enrolled devices are told to connect.
#[derive(Debug, Clone)]
pub enum GatewayAddress {
    /// A fixed `host:port` (`--gateway-advertise`).
    Advertised(String),
    /// The host the client used to reach the API, with this gateway port.
    SameHost(u16),
}

/// What every handler shares.
pub struct ApiContext {
    /// The store.
    pub store: Arc<Store>,
    /// The cloud's CAs: the one that signs device certificates, the one installers pin.
    pub cas: crate::datadir::authority::Authorities,
    /// The server secret API keys derive from.
    pub secret: ServerSecret,
    /// Live gateway sessions.
    pub registry: SessionRegistry,
    /// SPIFFE trust domain of device identities.
    pub trust_domain: String,
    /// Lifetime of device certificates.
    pub device_cert_lifetime: Duration,
    /// The gateway address handed to enrolling devices.
    pub gateway: GatewayAddress,
}

/// Shared handler state. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<ApiContext>);

impl AppState {
    /// Wraps the context.
    pub fn new(ctx: ApiContext) -> Self {
        AppState(Arc::new(ctx))
    }
}

impl Deref for AppState {
    type Target = ApiContext;
    fn deref(&self) -> &ApiContext {
        &self.0
    }
}
