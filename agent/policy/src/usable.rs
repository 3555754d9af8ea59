//! Warnings about `[filesystem]` entries that are valid but cannot work on this host: a path
//! that does not exist (landlock grants nothing for it) unless it is written `?PATH` (an
//! alternative for other hosts), an `exec` entry outside the read set,
//! a script whose `#!` interpreter is missing, not executable or outside the exec set. The
//! policy still loads; `policy check` prints these with file, line and key.

use std::path::{Path, PathBuf};

use toml_edit::ImDocument;

use crate::{Policy, Problem, check::line_col};

/// The interpreter a script names on its `#!` line (`None`: not a script, or unreadable).
pub fn shebang(path: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let mut file = std::fs::File::open(path).ok()?;
    let n = file.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let text = std::str::from_utf8(line).ok()?;
    text.split_ascii_whitespace().next().map(PathBuf::from)
}

/// Whether `path` is covered by one of `set` (an entry or below one), comparing where both
/// lead on this host.
fn covered(path: &Path, set: &[String]) -> bool {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let path = real(path);
    set.iter()
        .filter(|e| !e.starts_with('~'))
        .any(|e| path.starts_with(real(Path::new(e))))
}

/// The warnings for `policy`, located in its `text`.
pub fn warnings(text: &str, policy: &Policy) -> Vec<Problem> {
    let fs = &policy.filesystem;
    let mut out = Vec::new();
    let doc = ImDocument::parse(text).ok();
    let locate = |key: &str, index: usize| -> (usize, usize) {
        doc.as_ref()
            .and_then(|d| d.get("filesystem"))
            .and_then(|t| t.get(key))
            .and_then(|v| v.as_array())
            .and_then(|a| a.get(index))
            .and_then(toml_edit::Value::span)
            .map_or((0, 0), |s| line_col(text, s.start))
    };
    let mut warn = |key: &str, index: usize, message: String| {
        let (line, col) = locate(key, index);
        out.push(Problem {
            line,
            col,
            key: format!("filesystem.{key}[{index}]"),
            message,
        });
    };
    for (key, list) in [("read", &fs.read), ("write", &fs.write), ("exec", &fs.exec)] {
        for (i, entry) in list.iter().enumerate() {
            // `~` is the server's home, known only at launch.
            if entry.starts_with('~') {
                continue;
            }
            let path = Path::new(entry);
            if std::fs::symlink_metadata(path).is_err() {
                // Written `?PATH`: another host's alternative, expected to be missing here.
                if fs.optional.contains(entry) {
                    continue;
                }
                warn(
                    key,
                    i,
                    format!("{entry} does not exist on this host: the entry grants nothing"),
                );
                continue;
            }
            if key != "exec" {
                continue;
            }
            if !covered(path, &fs.read) {
                warn(
                    key,
                    i,
                    format!(
                        "{entry} is not in the read set: the program runs, but the files it \
                         reads beside itself (modules, data) are denied; add it or its \
                         directory to read"
                    ),
                );
            }
            if let Some(why) = script_problem(path, &fs.exec) {
                warn(key, i, why);
            }
        }
    }
    out.sort_by_key(|p| (p.line, p.col));
    out
}

/// Why the script at `path` cannot start under the exec set `exec` (`None`: not a script, or
/// its interpreter can run).
fn script_problem(path: &Path, exec: &[String]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let interp = shebang(path)?;
    let shown = path.display();
    let named = interp.display();
    match std::fs::metadata(&interp) {
        Err(_) => Some(format!(
            "{shown} is a script for {named}, which does not exist on this host"
        )),
        Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => Some(format!(
            "{shown} is a script for {named}, which is not an executable file"
        )),
        Ok(_) if !covered(&interp, exec) => Some(format!(
            "{shown} is a script for {named}, which is not in the exec set: the script cannot \
             start; add {named} to exec"
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_that_cannot_work_are_named_with_line_and_key() {
        let dir = std::env::temp_dir().join(format!("policy-usable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let script = dir.join("server.sh");
        std::fs::write(&script, "#!/no/such/shell\necho hi\n").expect("write");
        let good = dir.join("ok.sh");
        std::fs::write(&good, "#!/bin/sh\n").expect("write");
        let text = format!(
            "name = \"w\"\n[filesystem]\nread = [\"/usr\", \"/no/such/dir\", \"{d}\"]\n\
             exec = [\"/usr/bin\",\n  \"{s}\",\n  \"/etc\", \"{g}\"]\n",
            d = dir.display(),
            s = script.display(),
            g = good.display()
        );
        let policy = crate::parse(&text, None).expect("valid policy");
        let w = warnings(&text, &policy);
        let got: Vec<(usize, &str)> = w.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (3, "filesystem.read[1]"),
                (5, "filesystem.exec[1]"),
                (6, "filesystem.exec[2]"),
            ],
            "{w:#?}"
        );
        assert!(w[0].message.contains("does not exist"), "{w:#?}");
        assert!(w[1].message.contains("/no/such/shell"), "{w:#?}");
        assert!(w[2].message.contains("not in the read set"), "{w:#?}");
        assert_eq!(shebang(&good), Some(PathBuf::from("/bin/sh")));
        assert_eq!(shebang(Path::new("/usr/bin/python3")), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn optional_entries_may_be_missing_but_typos_still_warn() {
        let text = "name = \"w\"\n[filesystem]\n\
                    read = [\"/usr\", \"?/no/such/distro/pki\", \"/usr/bin/pyhton3\"]\n\
                    exec = [\"?/no/such/lib32\",\n  \"?/etc\"]\n";
        let policy = crate::parse(text, None).expect("valid policy");
        let w = warnings(text, &policy);
        let got: Vec<(usize, &str)> = w.iter().map(|p| (p.line, p.key.as_str())).collect();
        // The typo is not marked: it warns. The marked ones are quiet about being missing, but
        // an optional entry that exists is checked like any other (/etc is not in read).
        assert_eq!(
            got,
            [(3, "filesystem.read[2]"), (5, "filesystem.exec[1]")],
            "{w:#?}"
        );
        assert!(
            w[0].message.contains("/usr/bin/pyhton3 does not exist"),
            "{w:#?}"
        );
        assert!(w[1].message.contains("not in the read set"), "{w:#?}");
    }
}
