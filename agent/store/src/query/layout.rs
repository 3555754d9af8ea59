//! Tables that fit the terminal: columns two spaces apart, droppable columns left out and long
//! cells cut (in the middle for paths, at the end for prose) until the table fits.

use super::{QueryError, Write, io};

/// How a column gives way when the table is too wide.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Trunc {
    /// Never (ids, times, short words).
    Keep,
    /// Cut the middle (paths: both ends carry meaning).
    Middle,
    /// Cut the end (names, prose).
    End,
}

pub(super) struct Col {
    pub(super) header: &'static str,
    pub(super) min: usize,
    /// Width worth leaving droppable columns out for (at least `min`).
    pub(super) want: usize,
    pub(super) trunc: Trunc,
    /// Left out when even the narrowest table is too wide; lower ranks go first.
    pub(super) drop: Option<u8>,
}

impl Col {
    pub(super) const fn keep(header: &'static str) -> Self {
        Col {
            header,
            min: 0,
            want: 0,
            trunc: Trunc::Keep,
            drop: None,
        }
    }
    pub(super) const fn end(header: &'static str, min: usize) -> Self {
        Col {
            header,
            min,
            want: min,
            trunc: Trunc::End,
            drop: None,
        }
    }
    pub(super) const fn middle(header: &'static str, min: usize) -> Self {
        Col {
            header,
            min,
            want: min,
            trunc: Trunc::Middle,
            drop: None,
        }
    }
    pub(super) const fn wants(self, want: usize) -> Self {
        Col { want, ..self }
    }
    pub(super) const fn droppable(self, rank: u8) -> Self {
        Col {
            drop: Some(rank),
            ..self
        }
    }
}

/// Columns two spaces apart fitting `width`: leave out droppable columns while the narrowest
/// layout is too wide, then shrink the truncatable ones (widest first). Ids never shrink.
pub(super) fn table(
    out: &mut dyn Write,
    cols: &[Col],
    rows: Vec<Vec<String>>,
    width: usize,
) -> Result<(), QueryError> {
    let len = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = cols.iter().map(|c| len(c.header)).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(len(cell));
        }
    }
    // The narrowest each column may get, and the width worth dropping other columns for.
    let floor_of = |i: usize, n: usize| match cols[i].trunc {
        Trunc::Keep => widths[i],
        _ => widths[i].min(n.max(len(cols[i].header))),
    };
    let floors: Vec<usize> = (0..cols.len()).map(|i| floor_of(i, cols[i].min)).collect();
    let wants: Vec<usize> = (0..cols.len())
        .map(|i| floor_of(i, cols[i].want.max(cols[i].min)))
        .collect();
    let floor = |i: usize| floors[i];
    let want = |i: usize| wants[i];
    let mut shown: Vec<bool> = vec![true; cols.len()];
    let total = |w: &dyn Fn(usize) -> usize, shown: &[bool]| {
        let idx: Vec<usize> = (0..cols.len()).filter(|&i| shown[i]).collect();
        idx.iter().map(|&i| w(i)).sum::<usize>() + 2 * idx.len().saturating_sub(1)
    };
    while total(&want, &shown) > width {
        let next = (0..cols.len())
            .filter(|&i| shown[i])
            .filter_map(|i| cols[i].drop.map(|rank| (rank, i)))
            .min();
        let Some((_, i)) = next else { break };
        shown[i] = false;
    }
    loop {
        let current = widths.clone();
        if total(&|i| current[i], &shown) <= width {
            break;
        }
        // Columns above the width they want give way first, then all down to their floor.
        let above = |limit: &dyn Fn(usize) -> usize| {
            (0..cols.len())
                .filter(|&i| shown[i] && cols[i].trunc != Trunc::Keep && widths[i] > limit(i))
                .max_by_key(|&i| widths[i])
        };
        let shrinkable = above(&want).or_else(|| above(&floor));
        let Some(i) = shrinkable else { break };
        widths[i] -= 1;
    }
    // The last column, when it is prose (a summary, a reason), wraps rather than being cut.
    let last = (0..cols.len()).rev().find(|&i| shown[i]);
    let mut line = |cells: Vec<String>| -> io::Result<()> {
        let mut s = String::new();
        let mut more: Vec<String> = Vec::new();
        for (i, (cell, col)) in cells.into_iter().zip(cols).enumerate() {
            if !shown[i] {
                continue;
            }
            if !s.is_empty() {
                s.push_str("  ");
            }
            let cell = match col.trunc {
                Trunc::Keep => cell,
                Trunc::Middle => truncate_middle(&cell, widths[i]),
                Trunc::End if Some(i) == last => {
                    let mut parts = crate::wrap::wrap(&cell, widths[i]).into_iter();
                    let first = parts.next().unwrap_or_default();
                    let indent = " ".repeat(len(&s));
                    more = parts.map(|p| format!("{indent}{p}")).collect();
                    first
                }
                Trunc::End => truncate_end(&cell, widths[i]),
            };
            let pad = widths[i].saturating_sub(len(&cell));
            s.push_str(&cell);
            s.extend(std::iter::repeat_n(' ', pad));
        }
        writeln!(out, "{}", s.trim_end())?;
        for m in more {
            writeln!(out, "{m}")?;
        }
        Ok(())
    };
    line(cols.iter().map(|c| c.header.to_string()).collect())?;
    for row in rows {
        line(row)?;
    }
    Ok(())
}

/// `s` in at most `max` characters, the middle replaced by `…`.
pub(super) fn truncate_middle(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let chars: Vec<char> = s.chars().collect();
    let keep = max - 1;
    let mut tail = keep / 2 + keep % 2;
    // Paths: start the kept end at a '/' when one is a few characters back, so the last
    // components survive whole ("…/.aws/credentials" rather than "…aws/credentials").
    let slack = (keep - tail) / 2;
    if let Some(k) = (0..=slack).find(|k| chars[n - tail - k] == '/') {
        tail += k;
    }
    let head = keep - tail;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[n - tail..]);
    out
}

/// `s` in at most `max` characters, the end replaced by `…`.
pub(super) fn truncate_end(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}
