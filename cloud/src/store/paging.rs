//! Keyset paging, the one way every list is read a page at a time.
//!
//! A list has a total order: its sort key, then the item's id (which breaks ties). A page is
//! the items after a position in that order, the position being the last item's key. So a
//! position stays meaningful while items are added and removed around it (an offset would
//! shift), and a deep page costs the same as the first: the index seeks to the position.

use serde::{Deserialize, Serialize};

/// One component of a position: the value of a sort column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    /// An integer column (times are Unix seconds).
    Int(i64),
    /// A text column.
    Text(String),
}

/// Which page to read: the items after `after` (the key of the previous page's last item;
/// `None` for the first page), at most `limit` of them. The default is the first page of
/// [`heex_proto::api::DEFAULT_PAGE_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The position after which the page starts.
    pub after: Option<Vec<SortValue>>,
    /// Most items returned (at least 1).
    pub limit: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest::first(heex_proto::api::DEFAULT_PAGE_LIMIT)
    }
}

impl PageRequest {
    /// The first page of at most `limit` items.
    pub fn first(limit: u32) -> PageRequest {
        PageRequest { after: None, limit }
    }

    /// Rows to fetch: one more than the page holds, to learn whether another page follows.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit.max(1)) + 1
    }
}

/// One page of items, and the position to read the next page from (`None` on the last).
#[derive(Debug, Clone, PartialEq)]
pub struct PageOf<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// The key of the last item when more items follow it.
    pub next: Option<Vec<SortValue>>,
}

impl<T> PageOf<T> {
    /// Cuts `rows` (fetched with [`PageRequest::fetch`]) to the page, computing the next
    /// position with `key` when a row beyond the page was found.
    pub(crate) fn from_rows(
        mut rows: Vec<T>,
        page: &PageRequest,
        key: impl Fn(&T) -> Vec<SortValue>,
    ) -> PageOf<T> {
        let limit = page.limit.max(1) as usize;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more { rows.last().map(key) } else { None };
        PageOf { items: rows, next }
    }

    /// The same page with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> PageOf<U> {
        PageOf {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_knows_whether_more_follow() {
        let page = PageRequest::first(2);
        assert_eq!(page.fetch(), 3);
        let p = PageOf::from_rows(vec![1, 2, 3], &page, |i| vec![SortValue::Int(*i)]);
        assert_eq!(p.items, [1, 2]);
        assert_eq!(p.next, Some(vec![SortValue::Int(2)]));
        let p = PageOf::from_rows(vec![1, 2], &page, |i| vec![SortValue::Int(*i)]);
        assert_eq!(p.next, None, "exactly a page: no empty page after it");
    }
}
