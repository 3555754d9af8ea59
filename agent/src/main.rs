//! The `mcp-guard` binary: everything lives in the library, `cli` dispatches.
fn main() -> std::process::ExitCode {
    mcp_guard::cli::main()
}
