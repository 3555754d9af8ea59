//! How wide the query commands' tables may be: what `COLUMNS` says, else the terminal's width,
//! else (output to a file or a pipe) no limit, so nothing is cut for a script or a pager (the
//! store's tables wrap their last column to the width).

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
