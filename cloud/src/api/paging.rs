//! The paging convention of every list endpoint: `?limit=` and `?after=` in, `next_after`
//! out (see [`heex_proto::api::Page`]). A cursor is opaque to clients: the URL-safe base64
//! of the list's name, its order and the last item's position, so a cursor made for one
//! list or order is refused by another rather than read wrongly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use heex_proto::api::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::store::{PageRequest, SortValue};

pub use crate::error::BAD_CURSOR;

/// Longest cursor accepted, in characters.
const MAX_CURSOR_LEN: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// The list and order it was made for.
    l: String,
    /// The position.
    k: Vec<SortValue>,
}

/// The page a query asks for on the list named `list` (its name and order, e.g.
/// `devices:name`): a checked limit and the decoded cursor.
pub fn request(
    list: &str,
    limit: Option<u32>,
    after: Option<&str>,
) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE_LIMIT} (omit it for {DEFAULT_PAGE_LIMIT})"
        )));
    }
    let after = match after.map(str::trim).filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(decode(list, a).ok_or_else(|| ApiError::bad_request(BAD_CURSOR))?),
    };
    Ok(PageRequest { after, limit })
}

fn decode(list: &str, text: &str) -> Option<Vec<SortValue>> {
    if text.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let cursor: Cursor = serde_json::from_slice(&bytes).ok()?;
    (cursor.l == list && !cursor.k.is_empty()).then_some(cursor.k)
}

/// The `next_after` of a page of the list named `list`.
pub fn next_after(list: &str, next: Option<Vec<SortValue>>) -> Option<String> {
    let cursor = Cursor {
        l: list.to_owned(),
        k: next?,
    };
    // A Cursor is strings and integers: it always encodes.
    let json = serde_json::to_vec(&cursor).ok()?;
    Some(URL_SAFE_NO_PAD.encode(json))
}

/// The query of a list that only pages.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Most items returned: 1 to 1000, 100 when omitted.
    pub limit: Option<u32>,
    /// The previous page's `next_after` (omit for the first page).
    pub after: Option<String>,
}

impl PageQuery {
    /// The page asked for on the list named `list`.
    pub fn request(&self, list: &str) -> Result<PageRequest, ApiError> {
        request(list, self.limit, self.after.as_deref())
    }
}

/// The RFC 3339 time in query parameter `name`, if given.
pub fn time_param(
    name: &str,
    value: Option<String>,
) -> Result<Option<time::OffsetDateTime>, ApiError> {
    use time::format_description::well_known::Rfc3339;
    let Some(text) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    time::OffsetDateTime::parse(&text, &Rfc3339)
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{name} {text:?} is not an RFC 3339 time such as 2026-05-01T00:00:00Z"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_stay_on_their_list() {
        let key = vec![SortValue::Int(17), SortValue::Text("dev_x".into())];
        let c = next_after("devices:enrolled", Some(key.clone())).unwrap();
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let page = request("devices:enrolled", Some(5), Some(&c)).unwrap();
        assert_eq!(page.after, Some(key));
        assert_eq!(page.limit, 5);
        for (list, cursor) in [
            ("devices:name", c.as_str()),
            ("devices:enrolled", "not base64!"),
            ("devices:enrolled", "e30"),
            ("devices:enrolled", &"A".repeat(MAX_CURSOR_LEN + 1)),
        ] {
            let e = request(list, None, Some(cursor)).unwrap_err();
            let status = axum::response::IntoResponse::into_response(e).status();
            assert_eq!(
                status,
                axum::http::StatusCode::BAD_REQUEST,
                "{list} {cursor}"
            );
        }
        assert_eq!(request("x", None, None).unwrap().limit, DEFAULT_PAGE_LIMIT);
        assert!(request("x", Some(0), None).is_err());
        assert!(request("x", Some(MAX_PAGE_LIMIT + 1), None).is_err());
        assert_eq!(next_after("x", None), None);
    }
}
