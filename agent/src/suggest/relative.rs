//! Where a relative path a server opened lies. The event keeps the path as the program passed
//! it (git, having changed into a repository, opens `.git/HEAD`), not the working directory. The
//! session's absolute opens show which directories hold an entry of that name (`/src/repo/.git`),
//! and the one most used is taken as the working directory.

use std::collections::{BTreeMap, HashMap};

/// Directories known from a session's absolute paths, by the names of their entries.
pub(super) struct Places {
    /// Entry name → the directories holding an entry of that name, with how often one was used.
    by_name: HashMap<String, BTreeMap<String, usize>>,
}

impl Places {
    /// Indexes every absolute path in `paths` (relative ones are ignored).
    pub(super) fn new<'a>(paths: impl Iterator<Item = &'a str>) -> Self {
        let mut by_name: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
        for p in paths.filter(|p| p.starts_with('/')) {
            let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
            for n in 1..=comps.len() {
                let parent = format!("/{}", comps[..n - 1].join("/"));
                *by_name
                    .entry(comps[n - 1].to_string())
                    .or_default()
                    .entry(parent)
                    .or_default() += 1;
            }
        }
        Places { by_name }
    }

    /// `rel` made absolute, if a directory holding its first component is known.
    pub(super) fn place(&self, rel: &str) -> Option<String> {
        let mut rel = rel;
        while let Some(r) = rel.strip_prefix("./") {
            rel = r;
        }
        let rel = rel.trim_end_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            return None;
        }
        let first = rel.split('/').next()?;
        let (dir, _) = self
            .by_name
            .get(first)?
            .iter()
            .max_by_key(|(dir, n)| (**n, dir.len()))?;
        Some(if dir == "/" {
            format!("/{rel}")
        } else {
            format!("{dir}/{rel}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_lands_where_its_first_component_was_seen() {
        let places = Places::new(
            [
                "/src/repo/.git/HEAD",
                "/src/repo/.git/config",
                "/usr/lib/libz.so",
                "relative/ignored",
            ]
            .into_iter(),
        );
        assert_eq!(
            places.place(".git/objects/pack").as_deref(),
            Some("/src/repo/.git/objects/pack")
        );
        assert_eq!(
            places.place("./.git/refs/").as_deref(),
            Some("/src/repo/.git/refs")
        );
        assert_eq!(places.place("unknown/file"), None);
        assert_eq!(places.place("../escape"), None);
    }
}
