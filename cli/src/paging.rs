//! Following a list endpoint's pages (`limit`, `after`, `next_after`): the one place every
//! list command fetches through, and the streamed JSON forms of a list.

use heex_proto::api::{Page, MAX_PAGE_LIMIT};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::ApiClient;
use crate::context::Ctx;
use crate::display;
use crate::error::CliError;

/// One page as it arrived.
#[derive(Debug)]
pub struct Fetched<T> {
    /// The page's items, typed.
    pub items: Vec<T>,
    /// The same items as the server sent them (printed by `--json`).
    pub raw: Vec<Value>,
}

/// Fetches `path`'s pages in order, `page_size` items a request (1 to [`MAX_PAGE_LIMIT`]),
/// handing each page to `on_page` as it arrives and keeping none: memory stays that of one
/// page whatever the list's length. Stops after the last page or once `max` items came.
/// Answers whether the server holds more items than were fetched.
pub fn each_page<P>(
    client: &ApiClient,
    path: &str,
    query: &[(&'static str, String)],
    page_size: u32,
    max: Option<u64>,
    mut on_page: impl FnMut(Fetched<P::Item>) -> Result<(), CliError>,
) -> Result<bool, CliError>
where
    P: Page + DeserializeOwned,
{
    let page_size = page_size.clamp(1, MAX_PAGE_LIMIT);
    let mut after: Option<String> = None;
    let mut fetched = 0u64;
    loop {
        let limit = match max {
            Some(m) => m.saturating_sub(fetched).min(u64::from(page_size)),
            None => u64::from(page_size),
        };
        if limit == 0 {
            return Ok(after.is_some());
        }
        let mut q = query.to_vec();
        q.push(("limit", limit.to_string()));
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let reply = client.get::<P>(path, &q)?;
        let raw = raw_items(reply.raw, path)?;
        let next = reply.value.next_after().map(str::to_owned);
        let items = reply.value.into_items();
        fetched += items.len() as u64;
        if next.is_some() && (items.is_empty() || next == after) {
            return Err(CliError::Unexpected(format!(
                "the server's pages of {path} do not advance; is heex up to date?"
            )));
        }
        on_page(Fetched { items, raw })?;
        match next {
            Some(n) => after = Some(n),
            None => return Ok(false),
        }
    }
}

/// Every item of a short list (keys, members, invitations), all pages followed.
pub fn fetch_all<P>(
    client: &ApiClient,
    path: &str,
    query: &[(&'static str, String)],
) -> Result<Fetched<P::Item>, CliError>
where
    P: Page + DeserializeOwned,
{
    let mut all = Fetched {
        items: Vec::new(),
        raw: Vec::new(),
    };
    each_page::<P>(client, path, query, MAX_PAGE_LIMIT, None, |page| {
        all.items.extend(page.items);
        all.raw.extend(page.raw);
        Ok(())
    })?;
    Ok(all)
}

/// The items array of a page's JSON: its one array-valued member.
fn raw_items(raw: Value, path: &str) -> Result<Vec<Value>, CliError> {
    if let Value::Object(map) = raw {
        for (k, v) in map {
            if let (false, Value::Array(items)) = (k == "next_after", v) {
                return Ok(items);
            }
        }
    }
    Err(CliError::Unexpected(format!(
        "the server's answer to {path} is not a page of items; is heex up to date?"
    )))
}

/// How a streamed list prints its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonForm {
    /// One JSON array, written as items arrive.
    Array,
    /// One JSON object a line.
    Lines,
}

/// Writes a list's items as JSON while they arrive: one valid array (or one object a line)
/// however many pages they come in.
#[derive(Debug)]
pub struct JsonStream {
    form: JsonForm,
    written: u64,
}

impl JsonStream {
    /// Starts the output (`[` for an array).
    pub fn start(ctx: &mut Ctx<'_>, form: JsonForm) -> Result<Self, CliError> {
        if form == JsonForm::Array {
            ctx.print_raw("[")?;
        }
        Ok(JsonStream { form, written: 0 })
    }

    /// Writes items.
    pub fn items(&mut self, ctx: &mut Ctx<'_>, items: &[Value]) -> Result<(), CliError> {
        let mut text = String::new();
        for item in items {
            let json = serde_json::to_string(item)
                .map_err(|e| CliError::Unexpected(format!("cannot format JSON: {e}")))?;
            let json = display::safe_json(&json);
            match self.form {
                JsonForm::Array => {
                    text.push_str(if self.written == 0 { "\n  " } else { ",\n  " });
                    text.push_str(&json);
                }
                JsonForm::Lines => {
                    text.push_str(&json);
                    text.push('\n');
                }
            }
            self.written += 1;
        }
        ctx.print_raw(&text)
    }

    /// Ends the output (`]` for an array).
    pub fn finish(self, ctx: &mut Ctx<'_>) -> Result<(), CliError> {
        match (self.form, self.written) {
            (JsonForm::Array, 0) => ctx.print_raw("]\n"),
            (JsonForm::Array, _) => ctx.print_raw("\n]\n"),
            (JsonForm::Lines, _) => Ok(()),
        }
    }
}

/// How [`print_pages`] shows a list.
#[derive(Debug)]
pub struct Listing<'a, T> {
    /// `None`: a table; else the JSON form.
    pub json: Option<JsonForm>,
    /// The line shown when a table would have no rows.
    pub empty: &'a str,
    /// The table of one page's items; its first line, the header, is printed once.
    pub table: fn(&[T], &crate::table::Clock) -> String,
}

/// Prints `path`'s items page by page as they arrive (see [`each_page`]): one table (its
/// header once), one streamed JSON array, or JSON lines. Answers whether the server holds
/// more items than were printed.
pub fn print_pages<P>(
    ctx: &mut Ctx<'_>,
    client: &ApiClient,
    path: &str,
    query: &[(&'static str, String)],
    page_size: u32,
    max: Option<u64>,
    listing: &Listing<'_, P::Item>,
) -> Result<bool, CliError>
where
    P: Page + DeserializeOwned,
{
    let mut stream = match listing.json {
        Some(form) => Some(JsonStream::start(ctx, form)?),
        None => None,
    };
    let mut rows = 0u64;
    let more = each_page::<P>(client, path, query, page_size, max, |page| {
        if let Some(stream) = stream.as_mut() {
            return stream.items(ctx, &page.raw);
        }
        if page.items.is_empty() {
            return Ok(());
        }
        let text = (listing.table)(&page.items, &ctx.clock);
        let text = match rows {
            0 => text.as_str(),
            _ => text.split_once('\n').map_or("", |(_, rest)| rest),
        };
        rows += page.items.len() as u64;
        ctx.print(text)
    })?;
    match stream {
        Some(stream) => stream.finish(ctx)?,
        None if rows == 0 => ctx.println(listing.empty)?,
        None => {}
    }
    Ok(more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_items_are_the_one_array() {
        let raw = json!({"next_after": "abc", "devices": [{"id": 1}, {"id": 2}]});
        assert_eq!(raw_items(raw, "/x").unwrap().len(), 2);
        assert!(raw_items(json!([1, 2]), "/x").is_err());
        assert!(raw_items(json!({"next_after": "abc"}), "/x").is_err());
    }
}
