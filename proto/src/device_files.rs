//! The files of an enrolled machine, shared by the installer (which writes them) and the agent
//! (which reads them): their names, and the keys of `agent.toml`.

/// The agent's configuration file where the packages put it.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/heex/agent.toml";
/// The agent's configuration file, in the configuration directory.
pub const AGENT_TOML: &str = "agent.toml";
/// The device's private key (0600), in the state directory.
pub const DEVICE_KEY: &str = "device.key";
/// The key of a renewal the agent has in flight; a new enrollment makes it meaningless.
pub const DEVICE_KEY_PENDING: &str = "device.key.pending";
/// The device certificate, in the state directory.
pub const DEVICE_CRT: &str = "device.crt";
/// The CA certificates the device trusts (several during a CA rotation).
pub const CA_CRT: &str = "ca.crt";
/// What the running agent reports about itself, in the state directory.
pub const STATUS_JSON: &str = "status.json";

/// The keys of `agent.toml` the installer owns and rewrites on every enrollment, in the order
/// it writes them.
pub const OWNED_KEYS: [&str; 4] = ["server", "gateway", "device_id", "state_dir"];

/// The other keys the agent accepts: the administrator's settings, which a re-enrollment
/// keeps (`socket` is the older name of `socket_path`). The agent refuses any key not in
/// [`OWNED_KEYS`] or here; its tests check it accepts every one of them.
pub const SETTINGS: [&str; 8] = [
    "heartbeat_interval",
    "facts_interval",
    "backoff_initial",
    "backoff_max",
    "outbox_max_bytes",
    "socket_path",
    "socket",
    "socket_group",
];
