//! Every file mcp-guard writes under its state dir goes through here.
//!
//! The state dir is opened once per operation; everything below it is reached relative to that
//! descriptor, one path component at a time, with `O_NOFOLLOW`: a symlink planted anywhere
//! below the state dir (a subdirectory, a file, a temp file) is never followed, and a name is
//! never a path (`..`, `/` and empty names are refused before any system call). Files are
//! written whole to a fresh temp file (`O_CREAT|O_EXCL|O_NOFOLLOW`) and renamed over their name
//! (`renameat`): a reader sees the old or the new content, never a mix, and no existing file is
//! ever opened for writing. Directories are created 0700 and files 0600, and every directory
//! opened must belong to this user (or root) and be writable by nobody else, so no other user
//! can plant anything in them.
//!
//! [`Dir`] is the descriptor-relative part on its own, for files outside the state dir that are
//! rewritten in place (`client-config --write`).

use std::{
    ffi::OsStr,
    fs::File,
    io::{self, Read, Write},
    os::{
        fd::{AsFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, openat, renameat},
    sys::stat::{Mode, fchmod, mkdirat},
    unistd::{UnlinkatFlags, unlinkat},
};

/// The mode of every directory created under the state dir.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file written under the state dir.
pub const FILE_MODE: u32 = 0o600;

/// An open directory; every operation is relative to its descriptor and follows no symlink.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Refuses anything but one plain path component.
fn component(name: &str) -> io::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(name)
}

/// A temp file name next to `name` that no one else uses (it is created with `O_EXCL`).
fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        ".{name}.{}-{}-{nanos:x}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

impl Dir {
    /// Opens the absolute directory `path` from `/`, one component at a time, following no
    /// symlink on the way: what is opened is the directory the path names now, and stays the
    /// one every later call works in, whatever is renamed or replaced meanwhile.
    pub fn walk(path: &Path) -> io::Result<Dir> {
        if !path.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not an absolute path", path.display()),
            ));
        }
        let mut fd = nix::fcntl::open("/", DIR_FLAGS, Mode::empty()).map_err(errno)?;
        for c in path.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(name) => {
                    fd = openat(&fd, name, DIR_FLAGS, Mode::empty()).map_err(|e| {
                        #[expect(
                            clippy::unnecessary_debug_formatting,
                            reason = "quoted and escaped: a hostile name cannot forge the message"
                        )]
                        let message = format!("{}: {name:?}: {}", path.display(), symlink_hint(e));
                        io::Error::new(io::Error::from(e).kind(), message)
                    })?;
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} is not a canonical path", path.display()),
                    ));
                }
            }
        }
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path the directory was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `name` for reading: a regular file, not through a symlink (a FIFO or device is
    /// refused without blocking on it).
    pub fn open_read(&self, name: &str) -> io::Result<File> {
        let fd = openat(
            &self.fd,
            component(name)?,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| self.error(name, e))?;
        let file = File::from(fd);
        if !file.metadata()?.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", self.path.join(name).display()),
            ));
        }
        Ok(file)
    }

    /// Reads `name` whole; `None` when it does not exist.
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let mut file = match self.open_read(name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Creates `name`, which must not exist yet (`O_EXCL`: not even as a dangling symlink), for
    /// writing with `mode`.
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let fd = openat(
            &self.fd,
            component(name)?,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| self.error(name, e))?;
        Ok(File::from(fd))
    }

    /// Replaces `name` with `bytes` atomically: a fresh temp file (mode `mode`, then `prepare`,
    /// e.g. to give it an owner), synced, renamed over `name`, then the directory synced. On
    /// any error the temp file is removed and `name` is as it was.
    pub fn replace(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        prepare: impl FnOnce(&File) -> io::Result<()>,
    ) -> io::Result<()> {
        component(name)?;
        let (tmp, mut file) = self.create_temp(name, mode)?;
        let written = (|| {
            file.write_all(bytes)?;
            // The umask may have narrowed the mode given at creation.
            fchmod(file.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
            prepare(&file)?;
            file.sync_all()?;
            renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(|e| self.error(name, e))?;
            self.sync()
        })();
        if written.is_err() {
            let _ = self.remove(&tmp);
        }
        written
    }

    fn create_temp(&self, name: &str, mode: u32) -> io::Result<(String, File)> {
        let mut tries = 0;
        loop {
            let tmp = temp_name(name);
            match self.create_new(&tmp, mode) {
                Ok(f) => return Ok((tmp, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 10 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes the file `name`; `false` when there was none.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        match unlinkat(&self.fd, component(name)?, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// Flushes the directory's entries (after a rename) to disk.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd).map_err(errno)
    }

    /// The names in the directory (no `.`, `..`), sorted.
    pub fn names(&self) -> io::Result<Vec<String>> {
        let dup = self.fd.try_clone()?;
        let mut dir = nix::dir::Dir::from_fd(dup).map_err(errno)?;
        let mut out: Vec<String> = dir
            .iter()
            .filter_map(Result::ok)
            .map(|e| {
                OsStr::from_bytes(e.file_name().to_bytes())
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n != "." && n != "..")
            .collect();
        out.sort();
        Ok(out)
    }

    /// The directory's current path as the kernel resolves its descriptor (no symlinks in it).
    pub fn real_path(&self) -> io::Result<PathBuf> {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Opens the subdirectory `name` (creating it with [`DIR_MODE`] when `create`), not through a
    /// symlink.
    fn child(&self, name: &str, create: bool) -> io::Result<Dir> {
        component(name)?;
        if create {
            match mkdirat(&self.fd, name, Mode::from_bits_truncate(DIR_MODE)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.error(name, e)),
            }
        }
        let fd =
            openat(&self.fd, name, DIR_FLAGS, Mode::empty()).map_err(|e| self.error(name, e))?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
        })
    }

    fn error(&self, name: &str, e: Errno) -> io::Error {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {}", self.path.join(name).display(), symlink_hint(e)),
        )
    }
}

/// `O_NOFOLLOW` reports a symlink as ELOOP (a file) or ENOTDIR (`O_DIRECTORY`): say so.
fn symlink_hint(e: Errno) -> String {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => {
            format!("{e} (a symlink or not a directory: not followed)")
        }
        _ => e.to_string(),
    }
}

/// The state dir (`--state-dir`), open.
#[derive(Debug)]
pub struct StateDir {
    dir: Dir,
}

impl StateDir {
    /// Opens the state dir, creating it ([`DIR_MODE`]) when it is missing. Its own path is the
    /// administrator's and may pass through symlinks; from there on nothing is followed.
    pub fn create(path: &Path) -> io::Result<StateDir> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt as _;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        Self::open_checked(path)
    }

    /// Opens the state dir if it exists.
    pub fn existing(path: &Path) -> io::Result<Option<StateDir>> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::open_checked(path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path) -> io::Result<StateDir> {
        // A symlink at the state dir's own path must be the administrator's (or this user's).
        let link = std::fs::symlink_metadata(path)?;
        if link.file_type().is_symlink() {
            owned(path, link.uid())?;
        }
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", path.display()),
            )
        })?;
        let dir = Dir {
            fd,
            path: path.to_path_buf(),
        };
        check_private(&dir)?;
        Ok(StateDir { dir })
    }

    /// The state dir itself.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The directory `rel` below the state dir (`/`-separated plain names), created
    /// ([`DIR_MODE`]) where missing.
    pub fn subdir(&self, rel: &str) -> io::Result<Dir> {
        self.walk(rel, true)
    }

    /// The directory `rel` below the state dir, `None` when it (or a parent) does not exist.
    pub fn existing_subdir(&self, rel: &str) -> io::Result<Option<Dir>> {
        match self.walk(rel, false) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn walk(&self, rel: &str, create: bool) -> io::Result<Dir> {
        let mut names = rel.split('/');
        let first = names.next().unwrap_or_default();
        let mut dir = self.dir.child(first, create)?;
        check_private(&dir)?;
        for name in names {
            dir = dir.child(name, create)?;
            check_private(&dir)?;
        }
        Ok(dir)
    }

    /// Replaces `rel/name` (creating `rel`) with `bytes`, atomically, [`FILE_MODE`].
    pub fn write(&self, rel: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.subdir(rel)?
            .replace(name, bytes, FILE_MODE, |_| Ok(()))
    }

    /// Reads `rel/name`; `None` when it (or `rel`) does not exist.
    pub fn read(&self, rel: &str, name: &str) -> io::Result<Option<Vec<u8>>> {
        match self.existing_subdir(rel)? {
            Some(d) => d.read(name),
            None => Ok(None),
        }
    }

    /// Opens the regular file `name` in `dir`, creating it empty ([`FILE_MODE`]) when missing:
    /// for a file written through another interface (SQLite, a lock), which then finds it in
    /// place. An existing one must be a regular file of this user.
    pub fn ensure_file(&self, dir: &Dir, name: &str) -> io::Result<File> {
        match dir.create_new(name, FILE_MODE) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let fd = openat(
            &dir.fd,
            name,
            OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| dir.error(name, e))?;
        let file = File::from(fd);
        let meta = file.metadata()?;
        let path = dir.path.join(name);
        if !meta.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", path.display()),
            ));
        }
        owned(&path, meta.uid())?;
        Ok(file)
    }
}

/// Owned by this user or root.
fn owned(path: &Path, uid: u32) -> io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if uid == me || uid == 0 {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} belongs to uid {uid}, not to uid {me} or root: another user could change what \
             mcp-guard reads and writes there; refusing to use it",
            path.display()
        ),
    ))
}

/// A directory only its owner (this user or root) can change.
fn check_private(dir: &Dir) -> io::Result<()> {
    let meta = nix::sys::stat::fstat(&dir.fd).map_err(errno)?;
    owned(&dir.path, meta.st_uid)?;
    if meta.st_mode & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by group or others (mode {:o}): another user could plant files \
                 there; refusing to use it (chmod go-w it)",
                dir.path.display(),
                meta.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mcp-guard-statefs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn writes_are_private() {
        // (The umask can only narrow these; `trust_names` runs exec with umask 0.)
        let dir = temp("modes");
        let written = StateDir::create(&dir).and_then(|s| s.write("a/b", "f.json", b"{}"));
        written.expect("write");
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&dir.join("a")), DIR_MODE);
        assert_eq!(mode(&dir.join("a/b")), DIR_MODE);
        assert_eq!(mode(&dir.join("a/b/f.json")), FILE_MODE);
        let state = StateDir::create(&dir).expect("open");
        assert_eq!(
            state.read("a/b", "f.json").expect("read").as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(state.read("a/c", "f.json").expect("read"), None);
        assert_eq!(
            state.subdir("a/b").expect("dir").names().expect("names"),
            ["f.json"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let dir = temp("symlinks");
        let victim = temp("victim");
        std::fs::create_dir_all(&victim).expect("victim dir");
        std::fs::write(victim.join("f.json"), "precious").expect("victim");
        let state = StateDir::create(&dir).expect("create");
        // A subdirectory that is a symlink, and a file that is one.
        std::os::unix::fs::symlink(&victim, dir.join("pins")).expect("plant");
        assert!(state.write("pins", "f.json", b"x").is_err());
        assert!(state.read("pins", "f.json").is_err());
        std::fs::create_dir(dir.join("profiles")).expect("mkdir");
        std::os::unix::fs::symlink(victim.join("f.json"), dir.join("profiles/f.json"))
            .expect("plant");
        assert!(
            state.read("profiles", "f.json").is_err(),
            "read through a symlink"
        );
        // Replacing the symlink itself is fine: the victim stays.
        state.write("profiles", "f.json", b"new").expect("write");
        assert_eq!(
            std::fs::read_to_string(victim.join("f.json")).expect("victim"),
            "precious"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("profiles/f.json")).expect("new"),
            "new"
        );
        // Names are names, not paths.
        for bad in ["..", ".", "", "a/b", "../x"] {
            assert!(state.write("profiles", bad, b"x").is_err(), "{bad:?}");
        }
        assert!(state.write("../x", "f", b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&victim);
    }

    #[test]
    fn directories_others_can_write_are_refused() {
        let dir = temp("open");
        std::fs::create_dir_all(dir.join("pins")).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = StateDir::create(&dir).expect_err("world-writable");
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(dir.join("pins"), std::fs::Permissions::from_mode(0o775))
            .expect("chmod");
        let state = StateDir::create(&dir).expect("0755 is fine");
        assert!(
            state.write("pins", "f", b"x").is_err(),
            "group-writable subdir"
        );
        if nix::unistd::geteuid().is_root() {
            // Another user's directory (one nobody could plant in) is refused too.
            std::fs::set_permissions(dir.join("pins"), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            std::os::unix::fs::chown(dir.join("pins"), Some(65534), Some(65534)).expect("chown");
            let e = state.write("pins", "f", b"x").expect_err("nobody's dir");
            assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn walk_follows_no_symlink_on_the_way() {
        let dir = temp("walk");
        std::fs::create_dir_all(dir.join("real/sub")).expect("mkdir");
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).expect("symlink");
        assert!(Dir::walk(&dir.join("real/sub")).is_ok());
        let e = Dir::walk(&dir.join("link/sub")).expect_err("through a symlink");
        assert!(e.to_string().contains("not followed"), "{e}");
        assert!(Dir::walk(Path::new("relative")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
