//! Output bytes (a program's stdout, a step's stderr) turned into log lines as they arrive,
//! in bounded memory whatever the program writes:
//!
//! - a line ends at `\n` (a `\r\n` too);
//! - a lone `\r` starts the line over, as a terminal shows a progress bar redrawn in place,
//!   so a build's progress does not pile up as one endless line;
//! - a line longer than [`MAX_LINE`] is cut into pieces. Secrets are masked before it is
//!   cut and the last bytes that could begin a secret are held back, so a cut never leaves
//!   half a secret on each side.

/// Longest piece of a line kept before it is cut.
pub const MAX_LINE: usize = 64 * 1024;

pub struct LineSplitter {
    partial: Vec<u8>,
    /// A `\r` was the last byte seen: a `\n` next ends the line, anything else starts it over.
    carriage_return: bool,
    max_line: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            carriage_return: false,
            max_line: max_line.max(1),
        }
    }

    /// Feed bytes; `line` gets each finished line (without its terminator). `mask` masks
    /// secrets in a line about to be cut; `hold` is the length of the longest secret.
    pub fn push(&mut self, bytes: &[u8], mask: &dyn Fn(&str) -> String, hold: usize, line: &mut dyn FnMut(String)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.carriage_return {
                self.carriage_return = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    line(self.take());
                    continue;
                }
                // A redraw: what was on the line is gone.
                self.partial.clear();
            }
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(at) => {
                    self.append(&rest[..at], mask, hold, line);
                    if rest[at] == b'\n' {
                        line(self.take());
                    } else {
                        self.carriage_return = true;
                    }
                    rest = &rest[at + 1..];
                }
                None => {
                    self.append(rest, mask, hold, line);
                    rest = &[];
                }
            }
        }
    }

    /// The end of the stream: what is left is the last line.
    pub fn finish(&mut self, line: &mut dyn FnMut(String)) {
        if !self.partial.is_empty() {
            line(self.take());
        }
        self.carriage_return = false;
    }

    fn take(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        text
    }

    /// Add bytes that hold no line break, cutting the line while it is too long.
    fn append(&mut self, mut bytes: &[u8], mask: &dyn Fn(&str) -> String, hold: usize, line: &mut dyn FnMut(String)) {
        while !bytes.is_empty() {
            let room = (self.max_line + hold).saturating_sub(self.partial.len()).max(1);
            let take = room.min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() >= self.max_line + hold {
                self.cut(mask, hold, line);
            }
        }
    }

    /// Emit the front of an over-long line, masked, keeping the last `hold` bytes (which may
    /// be the start of a secret that the next bytes complete).
    fn cut(&mut self, mask: &dyn Fn(&str) -> String, hold: usize, line: &mut dyn FnMut(String)) {
        let masked = mask(&String::from_utf8_lossy(&self.partial));
        let mut at = masked.len().saturating_sub(hold);
        while !masked.is_char_boundary(at) {
            at -= 1;
        }
        if at == 0 {
            return;
        }
        line(masked[..at].to_string());
        self.partial = masked.as_bytes()[at..].to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize, secret: &str) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mask = |t: &str| {
            if secret.is_empty() {
                t.to_string()
            } else {
                t.replace(secret, "***")
            }
        };
        for c in chunks {
            s.push(c, &mask, secret.len(), &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out.into_iter().map(|l| mask(&l)).collect()
    }

    #[test]
    fn lines_carriage_returns_and_chunks() {
        assert_eq!(split(&[b"a\nb", b"c\r\nd"], 100, ""), ["a", "bc", "d"]);
        // A progress bar redrawn with `\r` leaves its last state only.
        assert_eq!(split(&[b"10%\r50%\r", b"100%\ndone\n"], 100, ""), ["100%", "done"]);
        assert_eq!(split(&[b"x\r", b"\ny"], 100, ""), ["x", "y"]);
    }

    #[test]
    fn long_lines_are_cut_in_bounded_memory() {
        let big = vec![b'z'; 1000];
        let lines = split(&[&big, &big, b"\n"], 300, "");
        assert!(
            lines.iter().all(|l| l.len() <= 300),
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines.iter().map(String::len).sum::<usize>(), 2000);
    }

    #[test]
    fn a_cut_never_splits_a_secret() {
        let secret = "SECRETVALUE";
        for offset in 0..40 {
            let mut text = "y".repeat(offset);
            text.push_str(secret);
            text.push_str(&"y".repeat(50));
            // Fed byte by byte, the worst case for a cut.
            let bytes = text.as_bytes();
            let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
            let joined = split(&chunks, 16, secret).join("");
            assert!(
                !joined.contains("SECRET") && !joined.contains("VALUE"),
                "{offset}: {joined}"
            );
            assert!(joined.contains("***"), "{offset}: {joined}");
        }
    }
}
