//! Human output: aligned tables, labelled fields, local times and relative times
//! ("in 12 days", "expired 3 days ago").

use std::sync::OnceLock;

use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::display::safe;

static LOCAL_OFFSET: OnceLock<UtcOffset> = OnceLock::new();

/// Records the local UTC offset. Call first thing in `main`, while the process has one
/// thread: on Unix the offset can only be read soundly then. Without it times show in UTC.
pub fn init_local_offset() {
    if let Ok(offset) = UtcOffset::current_local_offset() {
        let _ = LOCAL_OFFSET.set(offset);
    }
}

/// A table with a header row; columns are padded to their widest cell.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, columns separated by two spaces, no trailing
    /// spaces. Control and formatting characters in cells are shown escaped
    /// ([`crate::display::safe`]): a cell cannot move the cursor, break the line or reorder
    /// its neighbours.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let rows: Vec<Vec<String>> = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|row| row.iter().map(|c| safe(c).into_owned()).collect())
            .collect();
        let mut widths: Vec<usize> = rows[0].iter().map(|h| width(h)).collect();
        for row in &rows[1..] {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Labelled values, one per line, values aligned: `Label:   value`. Control and formatting
/// characters in values are shown escaped ([`crate::display::safe`]), so a value cannot add
/// a line of its own.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = w - k.chars().count();
        out.push_str(&format!("{k}:{}  {}\n", " ".repeat(pad), safe(v)));
    }
    out
}

/// "Now" and the local offset: everything time-relative is computed from one clock, so tests
/// can fix it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The current time.
    pub now: OffsetDateTime,
    /// The offset times are shown in.
    pub offset: UtcOffset,
}

impl Clock {
    /// The system clock, in the offset recorded by [`init_local_offset`] (else UTC).
    pub fn system() -> Self {
        Clock {
            now: OffsetDateTime::now_utc(),
            offset: LOCAL_OFFSET.get().copied().unwrap_or(UtcOffset::UTC),
        }
    }

    /// `t` as local date and time to the minute, e.g. `2026-05-01 14:03` (with ` UTC` when
    /// shown in UTC).
    pub fn local(&self, t: OffsetDateTime) -> String {
        let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]");
        let shown = t
            .to_offset(self.offset)
            .format(fmt)
            .unwrap_or_else(|_| t.to_string());
        if self.offset == UtcOffset::UTC {
            shown + " UTC"
        } else {
            shown
        }
    }

    /// `t` relative to now: "in 12 days" for a time to come, "3 hours ago" or "less than a
    /// minute ago" for one that has passed (now included).
    pub fn relative(&self, t: OffsetDateTime) -> String {
        let ahead = t - self.now;
        let span = span(ahead.whole_seconds().unsigned_abs());
        if ahead.is_positive() {
            format!("in {span}")
        } else {
            format!("{span} ago")
        }
    }

    /// When something happened ("3 hours ago"). A time slightly ahead of this machine's
    /// clock (the server's clock runs ahead) still reads as past: "less than a minute ago".
    pub fn ago(&self, t: OffsetDateTime) -> String {
        self.relative(t.min(self.now))
    }

    /// An expiry relative to now: "in 12 days", or "expired 3 days ago" once past.
    pub fn expiry(&self, t: OffsetDateTime) -> String {
        if t > self.now {
            self.relative(t)
        } else {
            format!("expired {}", self.relative(t))
        }
    }

    /// A local time followed by its relative form: `2026-05-01 14:03 (in 12 days)`.
    pub fn both(&self, t: OffsetDateTime) -> String {
        format!("{} ({})", self.local(t), self.relative(t))
    }

    /// A local time followed by how long ago it was, as [`Clock::ago`]:
    /// `2026-05-01 14:03 (3 hours ago)`.
    pub fn both_ago(&self, t: OffsetDateTime) -> String {
        format!("{} ({})", self.local(t), self.ago(t))
    }

    /// When something last happened, as [`Clock::ago`]; `never` when it did not.
    pub fn ago_or_never(&self, t: Option<OffsetDateTime>) -> String {
        t.map_or_else(|| "never".to_owned(), |t| self.ago(t))
    }
}

/// A span of `secs` seconds in the largest sensible unit, rounded to the nearest.
fn span(secs: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    let (n, unit) = if secs < 45 {
        return "less than a minute".to_owned();
    } else if secs < 45 * MIN {
        (rounded(secs, MIN), "minute")
    } else if secs < 36 * HOUR {
        (rounded(secs, HOUR), "hour")
    } else {
        (rounded(secs, DAY), "day")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn rounded(secs: u64, unit: u64) -> u64 {
    (secs + unit / 2) / unit
}

/// A byte count in binary units: `7.8 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    fn clock() -> Clock {
        Clock {
            now: datetime!(2026-05-01 12:00:00 UTC),
            offset: offset!(+2),
        }
    }

    #[test]
    fn relative_times() {
        let c = clock();
        let d = time::Duration::days;
        assert_eq!(c.relative(c.now + d(12)), "in 12 days");
        assert_eq!(c.relative(c.now - d(3)), "3 days ago");
        assert_eq!(
            c.relative(c.now + d(1) + time::Duration::hours(13)),
            "in 2 days"
        );
        assert_eq!(c.relative(c.now + time::Duration::hours(1)), "in 1 hour");
        assert_eq!(c.relative(c.now + time::Duration::hours(30)), "in 30 hours");
        assert_eq!(
            c.relative(c.now - time::Duration::minutes(5)),
            "5 minutes ago"
        );
        assert_eq!(
            c.relative(c.now - time::Duration::seconds(1)),
            "less than a minute ago"
        );
        assert_eq!(c.relative(c.now), "less than a minute ago");
        // Within the same second, past and future still read as such.
        let ms = time::Duration::milliseconds;
        assert_eq!(c.relative(c.now - ms(400)), "less than a minute ago");
        assert_eq!(c.relative(c.now + ms(400)), "in less than a minute");
        assert_eq!(c.relative(c.now + d(3)), "in 3 days");
        assert_eq!(
            c.relative(c.now + time::Duration::seconds(50)),
            "in 1 minute"
        );
        // Something that happened never reads as future, even with the server's clock ahead.
        assert_eq!(
            c.ago(c.now + time::Duration::seconds(20)),
            "less than a minute ago"
        );
        assert_eq!(c.ago(c.now - d(2)), "2 days ago");
        assert_eq!(
            c.ago_or_never(Some(c.now - ms(1))),
            "less than a minute ago"
        );
        // A key created a moment ago with a 90-day lifetime still reads "90 days".
        assert_eq!(
            c.relative(c.now + d(90) - time::Duration::seconds(2)),
            "in 90 days"
        );
    }

    #[test]
    fn expiries() {
        let c = clock();
        assert_eq!(c.expiry(c.now + time::Duration::days(12)), "in 12 days");
        assert_eq!(
            c.expiry(c.now - time::Duration::days(3)),
            "expired 3 days ago"
        );
        assert_eq!(c.ago_or_never(None), "never");
        assert_eq!(c.expiry(c.now), "expired less than a minute ago");
    }

    #[test]
    fn local_times_use_the_offset() {
        let c = clock();
        assert_eq!(
            c.local(datetime!(2026-05-01 12:03:59 UTC)),
            "2026-05-01 14:03"
        );
        let utc = Clock {
            offset: UtcOffset::UTC,
            ..c
        };
        assert_eq!(
            utc.local(datetime!(2026-05-01 23:59:00 +02:00)),
            "2026-05-01 21:59 UTC"
        );
        assert_eq!(
            c.both(c.now + time::Duration::days(2)),
            "2026-05-03 14:00 (in 2 days)"
        );
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(["ID", "NAME", "STATUS"]);
        assert!(t.is_empty());
        t.row(vec![
            "abc".into(),
            "a much longer name".into(),
            "active".into(),
        ]);
        t.row(vec!["défghijk".into(), "ci".into(), String::new()]);
        assert_eq!(
            t.render(),
            "ID        NAME                STATUS\n\
             abc       a much longer name  active\n\
             défghijk  ci\n"
        );
    }

    #[test]
    fn fields_align_values() {
        assert_eq!(
            fields(&[("Email", "a@b".into()), ("Workspace", "w".into())]),
            "Email:      a@b\nWorkspace:  w\n"
        );
    }

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8 * 1024 * 1024 * 1024), "8.0 GiB");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
