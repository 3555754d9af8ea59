//! The eBPF object against the running kernel: each program loads (and the tracepoints attach)
//! exactly where `kernel::compat` says the kernel has what it needs, and the verifier's work on
//! each stays far below its limit. Run in every kernel of the matrix (`cargo xtask kernels`).
//!
//! Needs root.

use mcp_guard_kernel::compat::{NEEDS, Release, probe_programs};
use mcp_guard_tests::require_root;

/// The verifier gives up after this many processed instructions (`BPF_COMPLEXITY_LIMIT_INSNS`).
const VERIFIER_LIMIT: u32 = 1_000_000;
/// What a program may cost the verifier here: a tenth of its limit leaves room for the next
/// kernel's verifier to explore more states than this one does.
const BUDGET: u32 = VERIFIER_LIMIT / 10;

/// `major.minor` of the running kernel.
fn running() -> Release {
    // SAFETY: uname fills the struct it is given.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    assert_eq!(unsafe { libc::uname(&raw mut uts) }, 0, "uname");
    // SAFETY: the kernel NUL-terminates `release`.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    Release(parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn each_program_loads_exactly_where_the_kernel_has_what_it_needs() {
    require_root();
    let kernel = running();
    let status = probe_programs();
    let mut report = format!("Linux {kernel}:\n");
    for s in &status {
        let shown = match &s.result {
            Ok(Some(n)) => format!("loads, verifier processed {n} instructions"),
            Ok(None) => "loads (the kernel does not count verified instructions)".to_string(),
            Err(why) => format!("does not load: {why}"),
        };
        report.push_str(&format!(
            "  {:<16} needs Linux {:<5} {shown}\n",
            s.name,
            s.since.to_string()
        ));
    }
    println!("{report}");
    for s in &status {
        if kernel >= s.since {
            match &s.result {
                Ok(insns) => assert!(
                    insns.is_none_or(|n| n <= BUDGET),
                    "{}: the verifier processed {insns:?} instructions, over the budget of \
                     {BUDGET}\n{report}",
                    s.name
                ),
                Err(why) => panic!(
                    "{} ({}) must load on Linux {kernel}: {why}\n{report}",
                    s.name, s.role
                ),
            }
        } else {
            // The table would be too pessimistic (or this kernel has a backport): either way it
            // no longer says where the program runs.
            assert!(
                s.result.is_err(),
                "{} loads on Linux {kernel}, but kernel::compat says it needs {}: fix NEEDS\n\
                 {report}",
                s.name,
                s.since
            );
        }
    }
    assert!(!NEEDS.is_empty());
}
