//! `calls`, `events`, `alerts` and `trace`: the store's query on stdout, its error on stderr.

use std::{
    io::{self, Write},
    path::Path,
    process::ExitCode,
};

use mcp_guard_store::query::{NoRows, Query, QueryError, execute};

/// Runs a query against the store in `state_dir`, printing to stdout; errors, and the line
/// saying a `--json` list is empty, go to stderr.
pub fn run(state_dir: &Path, query: &Query) -> ExitCode {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = execute(state_dir, query, &mut out, width()).and_then(|empty| {
        out.flush()?;
        Ok(empty)
    });
    match result {
        Ok(empty) => {
            say_no_rows(empty);
            ExitCode::SUCCESS
        }
        // `mcp-guard events | head` is not an error.
        Err(QueryError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            crate::say::say(&e.to_string());
            ExitCode::FAILURE
        }
    }
}

/// A `--json` list's empty-result line, on stderr as it is (stdout stays JSON lines). The
/// fleet's queries too.
pub fn say_no_rows(empty: Option<NoRows>) {
    if let Some(NoRows(line)) = empty {
        crate::say::say_as_is(&line);
    }
}

/// `COLUMNS`, else the terminal's width; not a terminal: no limit (nothing is cut). The fleet's
/// queries too.
pub fn width() -> usize {
    crate::term_width::stdout_width().unwrap_or(usize::MAX)
}
