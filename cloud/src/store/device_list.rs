//! What a device list asks for: filters, a sort order and a page.

use std::fmt;
use std::str::FromStr;

use heex_proto::KeyId;
use time::OffsetDateTime;

use super::paging::{PageRequest, SortValue};
use super::{to_unix, DeviceRecord};

/// The orders devices can be listed in; the device id breaks ties in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSort {
    /// Enrollment time (the default).
    #[default]
    Enrolled,
    /// Name.
    Name,
    /// Last time a gateway heard from the device (never-seen devices first).
    LastSeen,
}

impl DeviceSort {
    /// Every order, as named in queries.
    pub const ALL: [DeviceSort; 3] = [DeviceSort::Enrolled, DeviceSort::Name, DeviceSort::LastSeen];

    /// The name used in `?sort=` and in cursors.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSort::Enrolled => "enrolled",
            DeviceSort::Name => "name",
            DeviceSort::LastSeen => "last_seen",
        }
    }

    /// The SQL expression sorted on (over the `devices d` table); each has an index.
    pub(crate) fn column(self) -> &'static str {
        match self {
            DeviceSort::Enrolled => "d.enrolled_at",
            DeviceSort::Name => "d.name",
            DeviceSort::LastSeen => "COALESCE(d.last_seen_at, 0)",
        }
    }

    /// The position of `d` in this order.
    pub fn key(self, d: &DeviceRecord) -> Vec<SortValue> {
        let first = match self {
            DeviceSort::Enrolled => SortValue::Int(to_unix(d.enrolled_at)),
            DeviceSort::Name => SortValue::Text(d.name.clone()),
            DeviceSort::LastSeen => SortValue::Int(d.last_seen_at.map_or(0, to_unix)),
        };
        vec![first, SortValue::Text(d.id.to_string())]
    }

    /// Whether `key` has the shape of a position in this order.
    pub fn fits(self, key: &[SortValue]) -> bool {
        let first_ok = matches!(
            (self, key.first()),
            (DeviceSort::Name, Some(SortValue::Text(_)))
                | (
                    DeviceSort::Enrolled | DeviceSort::LastSeen,
                    Some(SortValue::Int(_))
                )
        );
        first_ok && key.len() == 2 && matches!(key[1], SortValue::Text(_))
    }
}

impl FromStr for DeviceSort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DeviceSort::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "sort {s:?} is not one of enrolled, name, last_seen (prefix '-' for descending)"
                )
            })
    }
}

/// One label condition, as in Kubernetes label selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSelector {
    /// `key=value`: the label is set to the value.
    Equals(String, String),
    /// `key!=value`: the label is absent or set to another value.
    NotEquals(String, String),
    /// `key`: the label is set (to anything).
    Exists(String),
    /// `!key`: the label is not set.
    Absent(String),
}

impl LabelSelector {
    /// Parses a comma-separated list of selectors (`site=lyon,!retired`).
    pub fn parse_list(s: &str) -> Result<Vec<LabelSelector>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| part.parse())
            .collect()
    }
}

impl FromStr for LabelSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "label selector {s:?} {why}; use key=value, key!=value, key or !key, \
                 separated by commas"
            )
        };
        let key_ok = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        };
        let sel = if let Some((k, v)) = s.split_once("!=") {
            LabelSelector::NotEquals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some((k, v)) = s.split_once('=') {
            LabelSelector::Equals(k.trim().to_owned(), v.trim().to_owned())
        } else if let Some(k) = s.strip_prefix('!') {
            LabelSelector::Absent(k.trim().to_owned())
        } else {
            LabelSelector::Exists(s.trim().to_owned())
        };
        if !key_ok(sel.key()) {
            return Err(bad("has no valid label key"));
        }
        Ok(sel)
    }
}

impl LabelSelector {
    /// The label key the selector is about.
    pub fn key(&self) -> &str {
        match self {
            LabelSelector::Equals(k, _)
            | LabelSelector::NotEquals(k, _)
            | LabelSelector::Exists(k)
            | LabelSelector::Absent(k) => k,
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelSelector::Equals(k, v) => write!(f, "{k}={v}"),
            LabelSelector::NotEquals(k, v) => write!(f, "{k}!={v}"),
            LabelSelector::Exists(k) => write!(f, "{k}"),
            LabelSelector::Absent(k) => write!(f, "!{k}"),
        }
    }
}

/// A device list query: every filter set must hold (AND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceQuery {
    /// Only devices with (true) or without (false) a live session.
    pub connected: Option<bool>,
    /// Only revoked (true) or not revoked (false) devices.
    pub revoked: Option<bool>,
    /// Label conditions.
    pub labels: Vec<LabelSelector>,
    /// Text found in the name or the id (case-insensitive for ASCII letters).
    pub search: Option<String>,
    /// Only devices enrolled by this member (id or email).
    pub enrolled_by: Option<String>,
    /// Only devices enrolled with this key.
    pub enrolled_with_key: Option<KeyId>,
    /// Only devices whose certificate expires before this time.
    pub cert_expires_before: Option<OffsetDateTime>,
    /// Only devices not heard from since this time (never-seen devices included).
    pub last_seen_before: Option<OffsetDateTime>,
    /// The order.
    pub sort: DeviceSort,
    /// Whether the order is reversed.
    pub descending: bool,
    /// Which page.
    pub page: PageRequest,
}

impl DeviceQuery {
    /// Every device, in enrollment order, first page of `limit`.
    pub fn all(limit: u32) -> DeviceQuery {
        DeviceQuery {
            connected: None,
            revoked: None,
            labels: Vec::new(),
            search: None,
            enrolled_by: None,
            enrolled_with_key: None,
            cert_expires_before: None,
            last_seen_before: None,
            sort: DeviceSort::Enrolled,
            descending: false,
            page: PageRequest::first(limit),
        }
    }
}

/// Device counts of a workspace ([`super::Store::device_summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCounts {
    /// All devices, revoked ones included.
    pub total: u64,
    /// Devices with a live session.
    pub connected: u64,
    /// Devices not revoked whose certificate expires before the given time.
    pub expiring: u64,
    /// Revoked devices.
    pub revoked: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!(
            LabelSelector::parse_list("site=lyon, !retired,env!=prod,gpu").unwrap(),
            vec![
                LabelSelector::Equals("site".into(), "lyon".into()),
                LabelSelector::Absent("retired".into()),
                LabelSelector::NotEquals("env".into(), "prod".into()),
                LabelSelector::Exists("gpu".into()),
            ]
        );
        assert!(LabelSelector::parse_list("=lyon").is_err());
        assert!(LabelSelector::parse_list("!").is_err());
        assert!(LabelSelector::parse_list("a b=c").is_err());
        assert_eq!(LabelSelector::parse_list("").unwrap(), vec![]);
        for s in ["site=lyon", "site!=lyon", "gpu", "!gpu"] {
            assert_eq!(s.parse::<LabelSelector>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn sorts_parse() {
        for o in DeviceSort::ALL {
            assert_eq!(o.as_str().parse::<DeviceSort>(), Ok(o));
        }
        assert!("age".parse::<DeviceSort>().is_err());
    }
}
