//! Progress lines on stdout: `Step… ok (detail)`, so a person watching an install over SSH
//! sees where it stopped.

use std::io::Write;

/// Where progress goes.
pub struct Progress<'a> {
    out: &'a mut dyn Write,
}

impl<'a> Progress<'a> {
    /// Progress written to `out`.
    pub fn new(out: &'a mut dyn Write) -> Self {
        Progress { out }
    }

    /// Prints a whole line. Output errors are ignored: a closed stdout must not stop an
    /// enrollment half-way.
    pub fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// Runs `f` as a step titled `title`: prints `title… ` first, then `ok` (with the detail
    /// `f` returns, if any) or `failed`.
    pub fn step<T, E>(
        &mut self,
        title: &str,
        f: impl FnOnce() -> Result<(T, Option<String>), E>,
    ) -> Result<T, E> {
        let _ = write!(self.out, "{title}… ");
        let _ = self.out.flush();
        match f() {
            Ok((value, detail)) => {
                match detail {
                    Some(d) => self.line(&format!("ok ({d})")),
                    None => self.line("ok"),
                }
                Ok(value)
            }
            Err(e) => {
                self.line("failed");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_end_their_line() {
        let mut buf = Vec::new();
        let mut p = Progress::new(&mut buf);
        let v: Result<u8, ()> = p.step("Doing", || Ok((1, Some("fine".into()))));
        assert_eq!(v, Ok(1));
        let e: Result<u8, &str> = p.step("Failing", || Err("no"));
        assert_eq!(e, Err("no"));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "Doing… ok (fine)\nFailing… failed\n"
        );
    }
}
