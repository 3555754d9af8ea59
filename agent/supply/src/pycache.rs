//! The bytecode cache for pinned Python packages: `<state>/pycache/<digest of the pins>`,
//! compiled from the sources just verified, so that the server reads it
//! (`PYTHONPYCACHEPREFIX`) instead of the `__pycache__` dirs next to the sources, which RECORD
//! does not cover (a planted `.pyc` there would run instead of them), and nothing is recompiled
//! per launch. The server can read it but not write it.
//!
//! The compiler is the pinned interpreter, started by [`compile_jail`] from the descriptor
//! whose content was just checked against the pin (never by path), isolated (`-I -S`), as
//! `nobody`, unable to write anything or reach the network. It sends each compiled file on
//! stdout as a record (path, bytes); mcp-guard checks that the path lies inside the cache and
//! names a `.pyc`, and writes it. Compiled once per set of pins.

use std::{
    fmt::Write as _,
    io::{BufReader, Read, Write},
    os::{
        fd::AsRawFd,
        unix::{ffi::OsStringExt, fs::OpenOptionsExt, process::CommandExt},
    },
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
};

use mcp_guard_statefs::StateDir;

use super::{
    Pins, SHA256, SupplyError, compile_jail, io_err, manifest,
    pypi::{find_dist, record_path, record_rows, shebang},
    real_executable, sha256_bytes, sha256_reader,
};

/// Reads the sources to compile from stdin first (so the launcher's write never waits on the
/// compiler's output), then compiles the interpreter's standard library (the prefix hides its
/// own `__pycache__` too) and those files, writing one record per file to stdout:
/// u32 LE path length, the cache path, u64 LE data length, the `.pyc` bytes (timestamp-based,
/// as `compileall` writes them). Nothing is written to disk.
const COMPILE: &str = r"
import importlib.util, marshal, os, re, sys, sysconfig
files = sys.stdin.read().splitlines()
skip = re.compile(r'/(site-packages|dist-packages|test|tests|idlelib|lib2to3|tkinter|turtledemo|ensurepip)/')
out = sys.stdout.buffer
def emit(src):
    try:
        st = os.stat(src)
        with open(src, 'rb') as f:
            code = compile(f.read(), src, 'exec', dont_inherit=True)
    except Exception:
        return False
    data = (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, 'little')
            + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, 'little')
            + (st.st_size & 0xFFFFFFFF).to_bytes(4, 'little') + marshal.dumps(code))
    path = os.fsencode(importlib.util.cache_from_source(src))
    out.write(len(path).to_bytes(4, 'little') + path + len(data).to_bytes(8, 'little') + data)
    return True
ok = True
for root, dirs, names in os.walk(sysconfig.get_paths()['stdlib']):
    dirs.sort()
    if skip.search(root + '/'):
        dirs[:] = []
        continue
    for name in sorted(names):
        if name.endswith('.py'):
            ok = emit(os.path.join(root, name)) and ok
for f in files:
    ok = emit(f) and ok
out.flush()
sys.exit(0 if ok else 1)
";

/// The longest cache path a record may name.
const MAX_PATH: usize = 4096;
/// The largest `.pyc` a record may carry.
const MAX_PYC: u64 = 64 << 20;

/// Trees every compiler reads and executes from: programs, shared libraries, the loader.
const SYSTEM_EXEC: &[&str] = &["/usr", "/bin", "/lib", "/lib64", "/lib32"];
/// Files the dynamic loader and the interpreter read at startup.
const SYSTEM_READ: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/dev/null",
    "/dev/urandom",
];

/// The bytecode cache of `pins` (the program is `program`, found on PATH): compiled now unless
/// it is complete; returns its directory. A pinned interpreter whose content no longer matches
/// its pin is refused; one that is not a pinned Python leaves the cache empty (the server
/// compiles in memory at each start).
pub fn python_cache(pins: &Pins, program: &Path, state_dir: &Path) -> Result<PathBuf, SupplyError> {
    let key = sha256_bytes(manifest(pins).as_bytes());
    let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let rel = format!("pycache/{}", &key[SHA256.len()..SHA256.len() + 32]);
    let dir = state_dir.join(&rel);
    // Made like every directory of the state dir (0700, not through symlinks).
    let state = StateDir::create(&state_dir).map_err(|e| io_err(&state_dir, &e))?;
    let cache = state.subdir(&rel).map_err(|e| io_err(&dir, &e))?;
    let complete =
        |cache: &mcp_guard_statefs::Dir| cache.read(".complete").is_ok_and(|d| d.is_some());
    if complete(&cache) {
        return Ok(dir);
    }
    // One compiler at a time per cache; the others wait and find it complete.
    let lock_path = dir.join(".lock");
    let lock = state
        .ensure_file(&cache, ".lock")
        .map_err(|e| io_err(&lock_path, &e))?;
    // SAFETY: flock on an fd we own; released when `lock` is dropped (closed).
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err(&lock_path, &std::io::Error::last_os_error()));
    }
    if complete(&cache) {
        return Ok(dir);
    }
    let real = real_executable(program)?;
    let interpreter = shebang(&real)
        .and_then(|i| real_executable(&i).ok())
        .unwrap_or_else(|| real.clone());
    let is_python = interpreter
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("python"));
    let pinned = if interpreter == real {
        pins.executable.clone()
    } else {
        None
    }
    .or_else(|| {
        pins.files
            .iter()
            .find(|f| f.path == interpreter)
            .map(|f| f.digest.clone())
    });
    let Some(expected) = pinned.filter(|_| is_python) else {
        tracing::info!(
            "{}: not a pinned Python interpreter; bytecode cache left empty",
            interpreter.display()
        );
        return Ok(dir);
    };
    // The compiler is this descriptor: what is hashed here is what runs.
    let mut file = std::fs::File::open(&interpreter).map_err(|e| io_err(&interpreter, &e))?;
    let actual = sha256_reader(&mut file).map_err(|e| io_err(&interpreter, &e))?;
    if actual != expected {
        return Err(SupplyError::Mismatch {
            file: interpreter,
            what: "the interpreter that compiles the bytecode cache, changed since it was \
                   verified"
                .into(),
            expected,
            actual,
        });
    }
    let mut list = String::new();
    for p in &pins.pypi {
        let Some(dist) = find_dist(&p.site_packages, &p.name, &p.version) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(dist.join("RECORD")) else {
            continue;
        };
        for (rel, _) in record_rows(&text) {
            if rel.ends_with(".py") {
                let _ = writeln!(list, "{}", record_path(&p.site_packages, &rel).display());
            }
        }
    }
    let spec = compile_jail::CompileSpec {
        fd: file.as_raw_fd(),
        argv: vec![
            interpreter.display().to_string(),
            "-I".into(),
            "-S".into(),
            "-B".into(),
            "-X".into(),
            format!("pycache_prefix={}", dir.display()),
            "-c".into(),
            COMPILE.into(),
        ],
        read: pins
            .pypi
            .iter()
            .map(|p| p.site_packages.clone())
            .chain(SYSTEM_READ.iter().map(PathBuf::from))
            .collect(),
        exec: interpreter_trees(&interpreter)
            .into_iter()
            .chain(SYSTEM_EXEC.iter().map(PathBuf::from))
            .collect(),
    };
    if compile(&file, &spec, &list, &dir)? {
        cache
            .replace(".complete", b"", mcp_guard_statefs::FILE_MODE, |_| Ok(()))
            .map_err(|e| io_err(&dir.join(".complete"), &e))?;
    }
    drop(lock);
    Ok(dir)
}

/// The interpreter's installation: its prefix (the directory above its `bin`) and, for a
/// virtual environment, the base installation its `pyvenv.cfg` names (`home = .../bin`).
fn interpreter_trees(interpreter: &Path) -> Vec<PathBuf> {
    let mut trees = Vec::new();
    if let Some(prefix) = interpreter.parent().and_then(Path::parent) {
        trees.push(prefix.to_path_buf());
        if let Ok(cfg) = std::fs::read_to_string(prefix.join("pyvenv.cfg")) {
            for line in cfg.lines() {
                if let Some((k, v)) = line.split_once('=')
                    && k.trim() == "home"
                    && let Some(base) = Path::new(v.trim()).parent()
                {
                    trees.push(base.to_path_buf());
                }
            }
        }
    }
    trees
}

/// Runs the jailed compiler and writes what it sends into `dir`. True when the interpreter ran
/// to its end (a source that does not compile, e.g. a test fixture for another Python, is
/// compiled by nobody; the others are cached): the cache is then complete. False when the jail
/// could not be set up (said in the log; the next launch tries again).
fn compile(
    interpreter: &std::fs::File,
    spec: &compile_jail::CompileSpec,
    list: &str,
    dir: &Path,
) -> Result<bool, SupplyError> {
    let json = serde_json::to_string(spec).map_err(|e| SupplyError::Io(e.to_string()))?;
    let fd = interpreter.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(compile_jail::SUBCOMMAND)
        .arg(json)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only fcntl (async-signal-safe) on an fd number taken before
    // the fork: the verified interpreter stays open in the helper, at the same number.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| SupplyError::Io(format!("starting the bytecode compiler: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The compiler reads all of it before it writes anything (or has already failed).
        let _ = stdin.write_all(list.as_bytes());
    }
    let errors = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut e).take(16 << 10).read_to_end(&mut text);
            // Drain the rest so the compiler never blocks on a full pipe.
            let _ = std::io::copy(&mut e, &mut std::io::sink());
            String::from_utf8_lossy(&text).trim().to_string()
        })
    });
    let written = match child.stdout.take() {
        Some(out) => write_records(BufReader::new(out), dir),
        None => Err(SupplyError::Io("the compiler's output is missing".into())),
    };
    if written.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| SupplyError::Io(format!("waiting for the bytecode compiler: {e}")))?;
    let errors = errors.and_then(|t| t.join().ok()).unwrap_or_default();
    let n = written?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => {
            tracing::info!(
                "bytecode cache {}: {n} files compiled; some sources did not compile",
                dir.display()
            );
            Ok(true)
        }
        _ => {
            tracing::warn!(
                "bytecode cache {} not built ({status}): {errors}; the server compiles the \
                 pinned sources in memory at each start",
                dir.display()
            );
            Ok(false)
        }
    }
}

/// Writes each record of `from` below `dir`; refuses a path outside it or not a `.pyc`.
/// Returns how many files were written.
fn write_records(mut from: impl Read, dir: &Path) -> Result<usize, SupplyError> {
    let bad = |what: String| SupplyError::Io(format!("the bytecode compiler sent {what}"));
    let mut n = 0;
    loop {
        let mut len = [0u8; 4];
        match from.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(n),
            Err(e) => return Err(io_err(dir, &e)),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 || len > MAX_PATH {
            return Err(bad(format!("a path of {len} bytes")));
        }
        let mut path = vec![0u8; len];
        from.read_exact(&mut path).map_err(|e| io_err(dir, &e))?;
        let path = PathBuf::from(std::ffi::OsString::from_vec(path));
        let mut size = [0u8; 8];
        from.read_exact(&mut size).map_err(|e| io_err(dir, &e))?;
        let size = u64::from_le_bytes(size);
        if size > MAX_PYC {
            return Err(bad(format!("{} bytes for {}", size, path.display())));
        }
        let rel = path
            .strip_prefix(dir)
            .ok()
            .filter(|rel| {
                rel.components().all(|c| matches!(c, Component::Normal(_)))
                    && rel.extension().is_some_and(|e| e == "pyc")
            })
            .ok_or_else(|| bad(format!("{}, not a .pyc inside the cache", path.display())))?;
        let mut data = Vec::new();
        (&mut from)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| io_err(dir, &e))?;
        if data.len() as u64 != size {
            return Err(bad(format!("a truncated {}", path.display())));
        }
        let target = dir.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, &e))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .and_then(|mut f| f.write_all(&data))
            .map_err(|e| io_err(&target, &e))?;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, data: &[u8]) -> Vec<u8> {
        let mut v = u32::try_from(path.len())
            .expect("a short path")
            .to_le_bytes()
            .to_vec();
        v.extend_from_slice(path.as_bytes());
        v.extend_from_slice(&(data.len() as u64).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn records_are_written_inside_the_cache_only() {
        let dir = std::env::temp_dir().join(format!("pycache-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let d = dir.display();
        let mut stream = record(&format!("{d}/usr/lib/x/mod.cpython-311.pyc"), b"bytes");
        stream.extend(record(&format!("{d}/usr/lib/x/other.cpython-311.pyc"), b""));
        assert_eq!(write_records(&stream[..], &dir).expect("written"), 2);
        assert_eq!(
            std::fs::read(dir.join("usr/lib/x/mod.cpython-311.pyc")).expect("read"),
            b"bytes"
        );
        for evil in [
            format!("{d}/../escape.cpython-311.pyc"),
            "/etc/cron.d/x.pyc".to_string(),
            format!("{d}/usr/lib/x/mod.py"),
            format!("{d}-sibling/x.pyc"),
        ] {
            let e = write_records(&record(&evil, b"x")[..], &dir).expect_err("refused");
            assert!(e.to_string().contains("not a .pyc inside the cache"), "{e}");
        }
        assert!(
            !dir.parent()
                .expect("parent")
                .join("escape.cpython-311.pyc")
                .exists()
        );
        // A truncated stream is an error, not a short file.
        let mut cut = record(&format!("{d}/a.pyc"), b"0123456789");
        cut.truncate(cut.len() - 3);
        assert!(write_records(&cut[..], &dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
