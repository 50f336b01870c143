//! The gateway's `host:port`: what `heex-cloud serve --gateway-advertise` takes, what the
//! cloud hands the installer at enrollment and what the agent dials. One parser for all
//! three, so a machine never enrolls with an address its agent then refuses.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest host name accepted (DNS's limit).
pub const MAX_HOST_CHARS: usize = 253;

/// A gateway address: a DNS name, an IPv4 address or a bracketed IPv6 address, and a port
/// (1 to 65535). Displayed as it is written (`gw.example:8444`, `[::1]:8444`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayAddr {
    /// The host, IPv6 addresses without their brackets.
    host: String,
    port: u16,
}

/// Why a text is not a gateway address; the message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gateway address {text:?} {reason}")]
pub struct GatewayAddrError {
    text: String,
    reason: &'static str,
}

impl GatewayAddr {
    /// The host to dial and to verify the certificate against (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when the host is an IPv6 address.
    pub fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }
}

impl FromStr for GatewayAddr {
    type Err = GatewayAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| GatewayAddrError {
            text: s.chars().take(300).collect(),
            reason,
        };
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse("holds a space or control character"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| refuse("must be [IPv6 address]:port, e.g. [::1]:8444"))?;
            if v6.parse::<Ipv6Addr>().is_err() {
                return Err(refuse("has no valid IPv6 address between its brackets"));
            }
            (v6, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| refuse("must be host:port, e.g. gw.example.com:8444"))?;
            if host.contains(':') {
                return Err(refuse(
                    "looks like an IPv6 address without brackets: write it as [address]:port, \
                     e.g. [::1]:8444",
                ));
            }
            if host.is_empty() {
                return Err(refuse(
                    "has no host: write host:port, e.g. gw.example.com:8444",
                ));
            }
            let name_ok = host.len() <= MAX_HOST_CHARS
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
            if !name_ok && host.parse::<Ipv4Addr>().is_err() {
                return Err(refuse(
                    "has a host that is neither a DNS name nor an IP address",
                ));
            }
            (host, port)
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 && !port.starts_with('+') => p,
            _ => return Err(refuse("has no port from 1 to 65535 after its last ':'")),
        };
        Ok(GatewayAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for GatewayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ipv6() {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ipv4_and_bracketed_ipv6_parse_and_display_as_written() {
        for (text, host, port) in [
            ("gw.example.com:8444", "gw.example.com", 8444),
            ("127.0.0.1:1", "127.0.0.1", 1),
            ("[::1]:8444", "::1", 8444),
            ("[fe80::1:2]:65535", "fe80::1:2", 65535),
            ("localhost:443", "localhost", 443),
        ] {
            let a: GatewayAddr = text.parse().unwrap();
            assert_eq!((a.host(), a.port()), (host, port), "{text}");
            assert_eq!(a.to_string(), text);
        }
    }

    #[test]
    fn everything_else_is_refused_with_the_fix() {
        let e = "::1:8444".parse::<GatewayAddr>().unwrap_err().to_string();
        assert!(e.contains("[::1]:8444"), "{e}");
        for bad in [
            "",
            "gw.example",
            ":8444",
            "gw:0",
            "gw:http",
            "gw:+80",
            "gw:65536",
            "[::1]",
            "[::1]8444",
            "[nope]:8444",
            "[127.0.0.1]:8444",
            "gw example:8444",
            "gw\n:8444",
            "gw/x:8444",
            "üñí.example:8444",
        ] {
            assert!(bad.parse::<GatewayAddr>().is_err(), "{bad:?}");
        }
        let long = format!("{}:8444", "a".repeat(MAX_HOST_CHARS + 1));
        assert!(long.parse::<GatewayAddr>().is_err());
    }
}
