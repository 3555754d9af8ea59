//! The policies the agent launches with, read from the policy dir and kept: SIGHUP re-reads
//! them, and a file that no longer validates keeps its last good version (and the agent says
//! why). A name not seen before is read on first use.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use mcp_guard_policy::{self as policy, Policy};

/// One validated policy with the text it was parsed from (what the session worker parses).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// Its content when it was validated.
    pub text: String,
    /// The policy.
    pub policy: Policy,
}

/// The policy dir's policies by name.
#[derive(Debug)]
pub struct PolicySet {
    dir: PathBuf,
    by_name: BTreeMap<String, Loaded>,
}

impl PolicySet {
    /// Reads every `NAME.toml` of `dir`; the problems of those that do not validate.
    pub fn load(dir: &Path) -> (PolicySet, Vec<String>) {
        let mut set = PolicySet {
            dir: dir.to_path_buf(),
            by_name: BTreeMap::new(),
        };
        let problems = set.reload();
        (set, problems)
    }

    /// Re-reads the dir: changed files replace their policy when they validate, else the last
    /// good version stays; removed files are dropped. Returns what is wrong, for the log.
    pub fn reload(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{}: {e}", self.dir.display()));
                return problems;
            }
        };
        for path in entries.flatten().map(|e| e.path()) {
            let Some(name) = policy_name(&path) else {
                continue;
            };
            seen.push(name.clone());
            match read(&path) {
                Ok(loaded) => {
                    self.by_name.insert(name, loaded);
                }
                Err(e) if self.by_name.contains_key(&name) => problems.push(format!(
                    "{e}\n(keeping the last good version of policy {name})"
                )),
                Err(e) => problems.push(e),
            }
        }
        self.by_name.retain(|name, _| seen.contains(name));
        problems
    }

    /// The policy named `name`: the kept version, else read now (a file added since).
    pub fn get(&mut self, name: &str) -> Result<Loaded, String> {
        if let Some(loaded) = self.by_name.get(name) {
            return Ok(loaded.clone());
        }
        // `load` checks the name and says which file it looked for.
        policy::load(Some(name), &self.dir).map_err(|e| e.to_string())?;
        let loaded = read(&self.dir.join(format!("{name}.toml")))?;
        self.by_name.insert(name.to_string(), loaded.clone());
        Ok(loaded)
    }
}

impl PolicySet {
    /// The policy of the policy dir that owns the server name `server`: the policy of
    /// `<server>.toml` (named `server` itself when that file does not validate: the name is still
    /// taken), else one whose `name` is `server`. `None` when the name is free.
    pub fn owner_of(&mut self, server: &str) -> Option<String> {
        if self.dir.join(format!("{server}.toml")).exists() {
            return Some(
                self.get(server)
                    .map_or_else(|_| server.to_string(), |l| l.policy.name),
            );
        }
        self.by_name
            .values()
            .find(|l| l.policy.name == server)
            .map(|l| l.policy.name.clone())
    }
}

/// `NAME` of a `NAME.toml` file.
fn policy_name(path: &Path) -> Option<String> {
    if path.extension()? != "toml" {
        return None;
    }
    Some(path.file_stem()?.to_str()?.to_string())
}

/// Reads and validates one policy file.
pub fn read(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let policy = policy::parse(&text, Some(path)).map_err(|e| e.to_string())?;
    Ok(Loaded {
        path: path.to_path_buf(),
        text,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_keeps_the_last_good_version() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-policyset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.toml"), "name = \"a\"\n").expect("write");
        let (mut set, problems) = PolicySet::load(&dir);
        assert!(problems.is_empty(), "{problems:?}");
        std::fs::write(dir.join("a.toml"), "name = \"a\"\nbogus = 1\n").expect("write");
        let problems = set.reload();
        assert!(
            problems.len() == 1 && problems[0].contains("bogus") && problems[0].contains("keeping"),
            "{problems:?}"
        );
        assert_eq!(set.get("a").expect("kept").text, "name = \"a\"\n");
        // Added after the load: read on first use.
        std::fs::write(dir.join("b.toml"), "name = \"b\"\n").expect("write");
        assert_eq!(set.get("b").expect("new").policy.name, "b");
        std::fs::remove_file(dir.join("a.toml")).expect("rm");
        set.reload();
        assert!(set.get("a").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn server_names_belong_to_the_policy_of_that_file_or_name() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-owners-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("gh.toml"), "name = \"github\"\n").expect("write");
        std::fs::write(dir.join("broken.toml"), "name = \"broken\"\nbogus = 1\n").expect("write");
        let (mut set, _) = PolicySet::load(&dir);
        assert_eq!(set.owner_of("gh").as_deref(), Some("github"), "by file");
        assert_eq!(set.owner_of("github").as_deref(), Some("github"), "by name");
        assert_eq!(
            set.owner_of("broken").as_deref(),
            Some("broken"),
            "still taken"
        );
        assert_eq!(set.owner_of("free"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
