//! A long string read in bounded pieces: the scanner builds several views of what it reads, so
//! a string of many megabytes is cut into pieces of about [`PIECE`] bytes, each read alone, and
//! their findings merged.
//!
//! Nothing that fits in two sentences is lost at a cut: a piece ends at a sentence's end (or,
//! in a sentence too long for one piece, at a blank), and the next piece starts again at the
//! start of the last sentence of the one before (at most [`OVERLAP`] bytes back). Every pair of
//! consecutive sentences (the scanner's window) is then whole in some piece, and so is every
//! phrase shorter than the overlap. A whitespace run is never cut (padding is measured whole).
//!
//! The text may come in any chunks (a string decoded from its JSON a window at a time, or a
//! string held whole): the pieces depend only on the text.

/// A piece's size, before it is moved to a sentence's end.
pub const PIECE: usize = 64 * 1024;
/// How far back a piece may start in the one before (a sentence longer than this is repeated
/// only in part).
const OVERLAP: usize = 4 * 1024;

/// Text taken in chunks and handed on in pieces.
#[derive(Default)]
pub struct Pieces {
    buf: String,
    /// A piece was handed on (what is left at the end is then only read if it holds new text).
    emitted: bool,
    /// Bytes at the start of `buf` already read in a piece.
    seen: usize,
}

impl Pieces {
    /// Appends `text`; hands `f` each piece that is complete.
    pub fn push(&mut self, mut text: &str, f: &mut impl FnMut(&str)) {
        while !text.is_empty() {
            let room = (2 * PIECE).saturating_sub(self.buf.len()).max(4);
            let take = match floor_boundary(text, room.min(text.len())) {
                0 => text.chars().next().map_or(text.len(), char::len_utf8),
                n => n,
            };
            self.buf.push_str(&text[..take]);
            text = &text[take..];
            while self.buf.len() >= 2 * PIECE {
                self.emit(f);
            }
        }
    }

    /// Hands `f` what is left (a string shorter than a piece is one piece, even empty).
    pub fn finish(mut self, f: &mut impl FnMut(&str)) {
        while self.buf.len() > PIECE {
            self.emit(f);
        }
        if !self.emitted || self.buf.len() > self.seen {
            f(&self.buf);
        }
    }

    fn emit(&mut self, f: &mut impl FnMut(&str)) {
        let (end, next) = cut(&self.buf);
        f(&self.buf[..end]);
        self.emitted = true;
        self.buf.drain(..next);
        self.seen = end - next;
    }
}

/// Where the first piece of `b` ends, and where the next one starts.
fn cut(s: &str) -> (usize, usize) {
    let b = s.as_bytes();
    let limit = floor_boundary(s, PIECE.min(b.len()));
    let half = limit / 2;
    let end = last_sentence_end(b, half, limit)
        .or_else(|| (half..limit).rev().find(|&i| b[i].is_ascii_whitespace()))
        .unwrap_or(limit);
    // The blanks after the cut stay with this piece (a run is measured whole, up to a piece).
    let mut end = end;
    while end < b.len().min(limit + PIECE) && b[end].is_ascii_whitespace() {
        end += 1;
    }
    let end = floor_boundary(s, end);
    // The next piece starts at the start of this piece's last sentence.
    let text_end = b[..end]
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let floor = end.saturating_sub(OVERLAP);
    let mut next = last_sentence_end(b, floor, text_end.saturating_sub(1)).unwrap_or(floor);
    while next < end && b[next].is_ascii_whitespace() {
        next += 1;
    }
    let next = floor_boundary(s, next.min(end));
    // A piece always moves on.
    let next = if next == 0 { end } else { next };
    (end, next)
}

/// The last position in `from..=to` right after a sentence's end: a newline, or `.`, `!` or
/// `?` followed by a blank (as the scanner's sentences end).
fn last_sentence_end(b: &[u8], from: usize, to: usize) -> Option<usize> {
    (from.max(1)..=to.min(b.len()))
        .rev()
        .find(|&i| match b[i - 1] {
            b'\n' => true,
            b'.' | b'!' | b'?' => b.get(i).is_some_and(u8::is_ascii_whitespace),
            _ => false,
        })
}

/// The last character boundary of `s` at or before `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str, chunk: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut p = Pieces::default();
        let mut rest = text;
        while !rest.is_empty() {
            let n = floor_boundary(rest, chunk.min(rest.len())).max(1);
            p.push(&rest[..n], &mut |s| out.push(s.to_string()));
            rest = &rest[n..];
        }
        p.finish(&mut |s| out.push(s.to_string()));
        out
    }

    #[test]
    fn pieces_are_bounded_cover_the_text_and_do_not_depend_on_the_chunks() {
        // Numbered, so that each piece is found at one place only.
        let sentences: String = (0..20_000)
            .map(|i| format!("le cœur {i} de la forêt.  Déjà vu!\n"))
            .collect();
        let words: String = (0..40_000).map(|i| format!("forêt{i} ")).collect();
        let one_word: String = (0..60_000).map(|i| format!("é{i}")).collect();
        for text in [
            sentences.as_str(),
            words.as_str(),
            one_word.as_str(),
            "short",
            "",
        ] {
            let whole = pieces(text, usize::MAX);
            assert!(whole.iter().all(|p| p.len() <= PIECE + 64), "bounded");
            assert_eq!(pieces(text, 7), whole, "same pieces in chunks of 7");
            assert_eq!(
                pieces(text, 70_001),
                whole,
                "same pieces in chunks of 70001"
            );
            // Each piece starts inside the one before (or right at its end) and they reach
            // the end of the text.
            let mut at = 0;
            let mut covered = 0;
            for p in &whole {
                let start = text[at..]
                    .find(p.as_str())
                    .map(|i| at + i)
                    .expect("in order");
                assert!(start <= covered, "no gap");
                covered = start + p.len();
                at = start + p.chars().next().map_or(0, char::len_utf8);
            }
            assert_eq!(covered, text.len());
        }
    }
}
