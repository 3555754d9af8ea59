//! A policy that lists a program runs that program (issue 23): the ELF interpreter and shared
//! libraries of each `exec` entry come with it, every jail has the standard devices and no
//! other, and `policy check` warns about entries that cannot work. Needs root.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use mcp_guard_tests::{describe, give_to_server_user, mcp_guard, require_root};

/// A scratch dir for one test, outside /tmp (the jail mounts a private /tmp).
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let root = mcp_guard_tests::scratch_root()
            .join("runs-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("home")).expect("create scratch");
        std::fs::create_dir_all(root.join("work")).expect("create scratch");
        give_to_server_user(&root.join("home"));
        give_to_server_user(&root.join("work"));
        Scratch { root }
    }

    fn policy(&self, text: &str) -> PathBuf {
        let path = self.root.join("policy.toml");
        std::fs::write(&path, text).expect("write policy");
        path
    }

    /// `mcp-guard exec --passthrough` of `args` under `policy`.
    fn exec(&self, policy: &std::path::Path, args: &[&str]) -> Output {
        Command::new(mcp_guard())
            .env("MCP_GUARD_STATE_DIR", self.root.join("state"))
            .env("HOME", self.root.join("home"))
            .args(["exec", "--passthrough", "--policy"])
            .arg(policy)
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run mcp-guard exec")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn an_exec_entry_brings_its_interpreter_and_libraries() {
    require_root();
    let s = Scratch::new("python");
    // Neither /lib nor /usr/lib/x86_64-linux-gnu is granted: the dynamic loader and libc come
    // only from the exec entry itself.
    let policy = s.policy(
        r#"name = "python-only"
[filesystem]
read = ["/usr/lib/python3.11", "/etc"]
exec = ["/usr/bin/python3"]
"#,
    );
    let out = s.exec(&policy, &["/usr/bin/python3", "-c", "print('python ran')"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("python ran"),
        "{}",
        describe(&out)
    );
    // Only what the program needs: a library it does not link stays denied.
    let out = s.exec(
        &policy,
        &[
            "/usr/bin/python3",
            "-c",
            "open('/usr/lib/x86_64-linux-gnu/libcrypt.so.1','rb')",
        ],
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("PermissionError"),
        "{}",
        describe(&out)
    );
}
