//! The config file `client-config` reads and, with `--write`, rewrites, held by its directory.
//!
//! The path is resolved once (a config that is a symlink, as dotfile managers make, is replaced
//! where it really is and the link kept); its directory is then opened from `/` one component at
//! a time without following symlinks, and the file is read, backed up and replaced relative to
//! that descriptor only (`O_NOFOLLOW`, `O_EXCL`, `renameat`). Whoever owns the directory may
//! rename or swap it, or anything on its path, for a symlink at any moment: the rewrite still
//! lands in the directory that was read, never in the one a swapped path now names. A config
//! that is not a regular file (a FIFO, a device) is refused without blocking on it.

use std::{
    io::Write,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{Error, utc_stamp};
use mcp_guard_statefs::Dir;

/// A config file as read: its directory, name, owner and mode, and content.
#[derive(Debug)]
pub(super) struct ConfigFile {
    dir: Dir,
    name: String,
    /// The resolved path (for messages and the backup's path).
    target: PathBuf,
    uid: u32,
    gid: u32,
    mode: u32,
    bytes: Vec<u8>,
}

impl ConfigFile {
    /// Resolves `file`, opens its directory and reads it.
    pub(super) fn open(file: &Path) -> Result<ConfigFile, Error> {
        let read_err = |source| Error::Read {
            path: file.to_path_buf(),
            source,
        };
        let target = std::fs::canonicalize(file).map_err(read_err)?;
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(read_err(std::io::Error::other("not a file")));
        };
        let name = name
            .to_str()
            .ok_or_else(|| read_err(std::io::Error::other("the file name is not UTF-8")))?
            .to_string();
        let dir = Dir::walk(parent).map_err(read_err)?;
        let mut f = dir.open_read(&name).map_err(read_err)?;
        let meta = f.metadata().map_err(read_err)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut bytes).map_err(read_err)?;
        Ok(ConfigFile {
            dir,
            name,
            target,
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
            bytes,
        })
    }

    /// The content as read.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Backs the file up (its content as read) next to it, then atomically replaces it with
    /// `new`, both with the file's mode and owner. Returns the backup's path.
    pub(super) fn replace_with_backup(&self, new: &str) -> Result<PathBuf, Error> {
        let stamp = utc_stamp(SystemTime::now());
        let base = format!("{}.mcp-guard-backup-{stamp}", self.name);
        let (backup_name, mut backup) = self.create_unique(&base)?;
        let backup_path = self.dir_path().join(&backup_name);
        let written = backup
            .write_all(&self.bytes)
            .and_then(|()| backup.sync_all());
        if let Err(source) = written {
            let _ = self.dir.remove(&backup_name);
            return Err(Error::Backup {
                path: backup_path,
                source,
            });
        }
        self.keep_owner(&backup);
        drop(backup);
        self.dir
            .replace(&self.name, new.as_bytes(), self.mode, |tmp| {
                self.keep_owner(tmp);
                Ok(())
            })
            .map_err(|source| Error::Write {
                path: self.target.clone(),
                source,
            })?;
        Ok(backup_path)
    }

    fn dir_path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `base` exclusively (or `base-1`, `base-2`, ... when taken): a backup never
    /// overwrites another.
    fn create_unique(&self, base: &str) -> Result<(String, std::fs::File), Error> {
        let mut n = 0u32;
        loop {
            let name = if n == 0 {
                base.to_string()
            } else {
                format!("{base}-{n}")
            };
            match self.dir.create_new(&name, self.mode) {
                Ok(file) => return Ok((name, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(source) => {
                    return Err(Error::Backup {
                        path: self.dir_path().join(name),
                        source,
                    });
                }
            }
        }
    }

    /// Gives a file written for the user (when root rewrites a user's config) the original's
    /// owner. Best effort: without the right to chown, the file stays ours, still readable.
    fn keep_owner(&self, file: &std::fs::File) {
        if let Ok(own) = file.metadata()
            && (own.uid() != self.uid || own.gid() != self.gid)
        {
            let _ = std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attack the descriptor defeats: between the read and the write, the owner of the
    /// config's directory replaces it with a symlink to a directory of someone else's (here a
    /// stand-in for /etc holding a file of the config's name). The rewrite and the backup still
    /// land in the directory that was read; the other is untouched.
    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_read_gets_nothing() {
        let root = std::env::temp_dir().join(format!("mcp-guard-cc-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let user_dir = root.join("home/.config/Claude");
        let victim_dir = root.join("etc");
        std::fs::create_dir_all(&user_dir).expect("user dir");
        std::fs::create_dir_all(&victim_dir).expect("victim dir");
        let original = "{\"mcpServers\": {}}";
        std::fs::write(user_dir.join("config.json"), original).expect("config");
        std::fs::write(victim_dir.join("config.json"), "victim").expect("victim");

        let config = ConfigFile::open(&user_dir.join("config.json")).expect("open");
        assert_eq!(config.bytes(), original.as_bytes());
        // The swap: the real directory moves away, a symlink to the victim takes its place.
        let moved = root.join("home/.config/Claude.moved");
        std::fs::rename(&user_dir, &moved).expect("move away");
        std::os::unix::fs::symlink(&victim_dir, &user_dir).expect("plant the symlink");

        let backup = config.replace_with_backup("{\"new\": 1}").expect("replace");
        assert_eq!(
            std::fs::read_to_string(victim_dir.join("config.json")).expect("victim"),
            "victim",
            "the victim was overwritten"
        );
        let victims: Vec<_> = std::fs::read_dir(&victim_dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(victims.len(), 1, "something was written there: {victims:?}");
        assert_eq!(
            std::fs::read_to_string(moved.join("config.json")).expect("rewritten"),
            "{\"new\": 1}"
        );
        let backup_name = backup.file_name().expect("backup name");
        assert_eq!(
            std::fs::read_to_string(moved.join(backup_name)).expect("backup"),
            original
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let root = std::env::temp_dir().join(format!("mcp-guard-cc-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("dir");
        let fifo = root.join("config.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        match ConfigFile::open(&fifo) {
            Err(Error::Read { source, .. }) => {
                assert!(
                    source.to_string().contains("not a regular file"),
                    "{source}"
                );
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
