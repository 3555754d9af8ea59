//! `calls`, `events`, `alerts` and `trace`: the store's query on stdout, its error on stderr.

use std::{
    io::{self, Write},
    path::Path,
    process::ExitCode,
};

use mcp_guard_store::query::{Query, QueryError, execute};

/// Runs a query against the store in `state_dir`, printing to stdout; errors go to stderr.
pub fn run(state_dir: &Path, query: &Query) -> ExitCode {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = execute(state_dir, query, &mut out, width()).and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `mcp-guard events | head` is not an error.
        Err(QueryError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            crate::say::say(&e.to_string());
            ExitCode::FAILURE
        }
    }
}

/// `COLUMNS`, else the terminal's width; not a terminal: no limit (nothing is cut). The fleet's
/// queries too.
pub fn width() -> usize {
    crate::term_width::stdout_width().unwrap_or(usize::MAX)
}
