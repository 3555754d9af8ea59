//! How wide the query commands' tables may be: what `COLUMNS` says, else the terminal's width,
//! else (output to a file or a pipe) no limit, so nothing is cut for a script or a pager.

use std::io::IsTerminal;

/// Narrower than this, `COLUMNS` or the terminal is taken to be wrong.
const MIN: usize = 40;
/// A terminal whose size cannot be read.
const FALLBACK: usize = 80;

/// The width stdout's tables fit; `None`: no limit.
pub fn stdout_width() -> Option<usize> {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&c| c >= MIN)
    {
        return Some(c);
    }
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid and
    // exclusively borrowed for the call; fd 1 is open (stdout).
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    let cols = usize::from(size.ws_col);
    Some(if r == 0 && cols >= MIN {
        cols
    } else {
        FALLBACK
    })
}

/// `s` in lines of at most `width` characters, broken at spaces, inside a word only when a
/// line has no space; never an empty list.
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut rest: Vec<char> = s.chars().collect();
    while rest.len() > width {
        // Break at the last space in the line; inside a word only when it has none.
        let cut = (1..=width).rev().find(|&i| rest[i] == ' ').unwrap_or(width);
        lines.push(
            rest[..cut]
                .iter()
                .collect::<String>()
                .trim_end()
                .to_string(),
        );
        let skip = if rest.get(cut) == Some(&' ') {
            cut + 1
        } else {
            cut
        };
        rest.drain(..skip);
    }
    lines.push(rest.into_iter().collect());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_keeps_every_character() {
        let s = "read of ~/.aws/credentials during get_weather, then a connect to 203.0.113.9:443";
        let lines = wrap(s, 24);
        assert!(lines.iter().all(|l| l.chars().count() <= 24), "{lines:?}");
        assert_eq!(lines.join(" "), s);
        assert_eq!(wrap("short", 24), ["short"]);
        let long = "x".repeat(50);
        assert_eq!(wrap(&long, 20).concat(), long);
    }
}
