//! What a program needs to start: its ELF interpreter (`PT_INTERP`) and the shared libraries
//! it links (`DT_NEEDED`, transitively), found the way the dynamic loader finds them: the
//! object's `DT_RPATH` (when it has no `DT_RUNPATH`), its `DT_RUNPATH`, `/etc/ld.so.cache`,
//! then the default directories. A policy that lists a program in `exec` is granted these so
//! the program runs; libraries opened later with `dlopen` are not followed.
//!
//! Only the headers, the dynamic section and its string table are read (a cached reader, not
//! the whole file), so a large binary costs a few small reads.

use std::{
    collections::{BTreeSet, VecDeque},
    path::{Path, PathBuf},
};

use object::{
    FileKind, ReadCache,
    elf::{self, FileHeader32, FileHeader64},
    read::elf::{FileHeader, ProgramHeader},
};

/// At most this many objects are followed (a loop or a hostile tree cannot run away).
const MAX_OBJECTS: usize = 512;

/// The system's library cache, read by the dynamic loader before the default directories.
const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// The dynamic loader's built-in directories, after the cache (Debian's multiarch ones first).
fn default_dirs(class64: bool) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if class64 {
        if let Some(triplet) = multiarch_triplet() {
            dirs.push(PathBuf::from(format!("/lib/{triplet}")));
            dirs.push(PathBuf::from(format!("/usr/lib/{triplet}")));
        }
        dirs.push("/lib64".into());
        dirs.push("/usr/lib64".into());
    }
    dirs.push("/lib".into());
    dirs.push("/usr/lib".into());
    dirs
}

/// This build's multiarch directory name (`x86_64-linux-gnu`).
fn multiarch_triplet() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("x86_64-linux-gnu"),
        "aarch64" => Some("aarch64-linux-gnu"),
        _ => None,
    }
}

/// What one ELF object asks of the loader.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// 64-bit class (libraries of the other class are skipped, as the loader does).
    pub class64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `PT_INTERP`, when present.
    pub interpreter: Option<PathBuf>,
    /// `DT_NEEDED` names, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` directories (already split, `$ORIGIN` not yet expanded).
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` directories.
    pub runpath: Vec<String>,
}

/// Reads what `path` needs; `None` when it is not an ELF file (a script, a directory) or
/// cannot be read.
pub fn needs(path: &Path) -> Option<Needs> {
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let cache = ReadCache::new(file);
    match FileKind::parse(&cache).ok()? {
        FileKind::Elf64 => parse::<FileHeader64<object::Endianness>>(&cache, true),
        FileKind::Elf32 => parse::<FileHeader32<object::Endianness>>(&cache, false),
        _ => None,
    }
}

fn parse<Elf: FileHeader<Endian = object::Endianness>>(
    data: &ReadCache<std::fs::File>,
    class64: bool,
) -> Option<Needs> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let mut out = Needs {
        class64,
        machine: header.e_machine(endian),
        ..Needs::default()
    };
    for segment in header.program_headers(endian, data).ok()? {
        if let Ok(Some(interp)) = segment.interpreter(endian, data) {
            out.interpreter = Some(PathBuf::from(String::from_utf8_lossy(interp).into_owned()));
        }
    }
    let sections = header.sections(endian, data).ok()?;
    let table = sections.dynamic_table(endian, data).ok()?;
    let split = |s: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(s)
            .split(':')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect()
    };
    for d in &table {
        let Ok(value) = table.string(d) else {
            continue;
        };
        match d.tag {
            elf::DT_NEEDED => out.needed.push(String::from_utf8_lossy(value).into_owned()),
            elf::DT_RPATH => out.rpath.extend(split(value)),
            elf::DT_RUNPATH => out.runpath.extend(split(value)),
            _ => {}
        }
    }
    Some(out)
}

/// The files `programs` need to start, beyond themselves: each one's ELF interpreter and the
/// shared libraries it links, transitively. Programs that are not ELF files add nothing.
pub fn runtime_files(programs: &[PathBuf]) -> Vec<PathBuf> {
    let cache = LdCache::load(Path::new(LD_SO_CACHE));
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<(PathBuf, bool)> = programs.iter().map(|p| (p.clone(), true)).collect();
    // The executable's DT_RPATH applies to every library it loads (when they have no RUNPATH).
    let mut exe_rpath: Vec<PathBuf> = Vec::new();
    while let Some((path, is_program)) = queue.pop_front() {
        if seen.len() >= MAX_OBJECTS || !seen.insert(path.clone()) {
            continue;
        }
        let Some(needs) = needs(&path) else {
            continue;
        };
        if !is_program {
            found.insert(path.clone());
        }
        let origin = path.parent().unwrap_or(Path::new("/"));
        let expand = |dirs: &[String]| -> Vec<PathBuf> {
            dirs.iter()
                .filter_map(|d| expand_origin(d, origin))
                .collect()
        };
        let rpath = if needs.runpath.is_empty() {
            let mut r = expand(&needs.rpath);
            r.extend(exe_rpath.iter().cloned());
            r
        } else {
            Vec::new()
        };
        if is_program {
            exe_rpath = expand(&needs.rpath);
        }
        let runpath = expand(&needs.runpath);
        if let Some(interp) = &needs.interpreter {
            queue.push_back((interp.clone(), false));
        }
        for name in &needs.needed {
            if let Some(lib) = find(name, &needs, &rpath, &runpath, &cache) {
                queue.push_back((lib, false));
            }
        }
    }
    found.into_iter().collect()
}

/// What an exec set must add for its programs to start: the runtime files of each file entry
/// and, when the set covers them, of the launched `program` and of its `#!` interpreter.
pub fn for_exec_set(exec: &[PathBuf], program: &Path) -> Vec<PathBuf> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let covered = |p: &Path| {
        let p = real(p);
        exec.iter().any(|e| p.starts_with(real(e)))
    };
    let mut roots: Vec<PathBuf> = exec.iter().filter(|e| e.is_file()).cloned().collect();
    let interpreter = mcp_guard_policy::usable::shebang(program);
    for p in std::iter::once(program.to_path_buf()).chain(interpreter) {
        if covered(&p) {
            roots.push(p);
        }
    }
    runtime_files(&roots)
}

/// `$ORIGIN` (and `${ORIGIN}`) replaced by the object's directory; entries with other dynamic
/// string tokens, or relative ones, are left out (the loader would resolve them against
/// things this launch does not know).
fn expand_origin(dir: &str, origin: &Path) -> Option<PathBuf> {
    let o = origin.to_str()?;
    let d = dir.replace("${ORIGIN}", o).replace("$ORIGIN", o);
    (d.starts_with('/') && !d.contains('$')).then(|| PathBuf::from(d))
}

/// Where the loader would find library `name` for an object with `needs`.
fn find(
    name: &str,
    needs: &Needs,
    rpath: &[PathBuf],
    runpath: &[PathBuf],
    cache: &LdCache,
) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_absolute().then_some(p);
    }
    let fits = |p: &Path| {
        self::needs(p).is_some_and(|n| n.class64 == needs.class64 && n.machine == needs.machine)
    };
    rpath
        .iter()
        .chain(runpath)
        .map(|d| d.join(name))
        .chain(cache.lookup(name))
        .chain(
            default_dirs(needs.class64)
                .into_iter()
                .map(|d| d.join(name)),
        )
        .find(|candidate| fits(candidate))
}

/// `/etc/ld.so.cache` (glibc's "new" format, alone or after the old one): library name → paths.
#[derive(Debug, Default)]
pub struct LdCache {
    entries: Vec<(String, PathBuf)>,
}

impl LdCache {
    const MAGIC: &'static [u8] = b"glibc-ld.so.cache1.1";
    const HEADER: usize = 48;
    const ENTRY: usize = 24;

    /// Reads the cache; an absent or unreadable one is empty (the loader then uses the default
    /// directories, as this does).
    pub fn load(path: &Path) -> Self {
        std::fs::read(path)
            .map(|b| Self::parse(&b))
            .unwrap_or_default()
    }

    /// Parses the cache's bytes (anything malformed ends the list).
    pub fn parse(bytes: &[u8]) -> Self {
        let mut out = LdCache::default();
        let Some(start) = memchr::memmem::find(bytes, Self::MAGIC) else {
            return out;
        };
        let data = &bytes[start..];
        let u32_at = |off: usize| -> Option<u32> {
            let b = data.get(off..off + 4)?;
            Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let cstr_at = |off: usize| -> Option<&[u8]> {
            let rest = data.get(off..)?;
            let end = memchr::memchr(0, rest)?;
            Some(&rest[..end])
        };
        let Some(count) = u32_at(20) else {
            return out;
        };
        for i in 0..count as usize {
            let base = Self::HEADER + i * Self::ENTRY;
            let (Some(key), Some(value)) = (u32_at(base + 4), u32_at(base + 8)) else {
                break;
            };
            let (Some(k), Some(v)) = (cstr_at(key as usize), cstr_at(value as usize)) else {
                break;
            };
            out.entries.push((
                String::from_utf8_lossy(k).into_owned(),
                PathBuf::from(String::from_utf8_lossy(v).into_owned()),
            ));
        }
        out
    }

    /// The cached paths for `name`, in the cache's order.
    pub fn lookup<'a>(&'a self, name: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_needs_libc_and_its_loader() {
        let exe = std::env::current_exe().expect("current exe");
        let needs = needs(&exe).expect("the test binary is ELF");
        let interp = needs.interpreter.clone().expect("dynamically linked");
        let files = runtime_files(&[exe]);
        assert!(files.contains(&interp), "{files:?}");
        assert!(
            files
                .iter()
                .any(|f| f.file_name().is_some_and(|n| n == "libc.so.6")),
            "{files:?}"
        );
    }

    #[test]
    fn the_hosts_cache_names_libc() {
        let cache = LdCache::load(Path::new(LD_SO_CACHE));
        assert!(cache.lookup("libc.so.6").next().is_some(), "{cache:?}");
    }

    #[test]
    fn scripts_and_garbage_need_nothing() {
        let dir = std::env::temp_dir().join(format!("elf-deps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let script = dir.join("s");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
        let junk = dir.join("j");
        std::fs::write(&junk, b"\x7fELF\x02\x01\x01garbage").expect("write");
        assert_eq!(needs(&script), None);
        assert_eq!(needs(&junk), None);
        assert!(runtime_files(&[script, junk, dir.clone()]).is_empty());
        assert!(
            LdCache::parse(b"glibc-ld.so.cache1.1\xff\xff\xff\xff")
                .entries
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn origin_is_expanded_and_other_tokens_dropped() {
        let o = Path::new("/opt/app/bin");
        assert_eq!(
            expand_origin("$ORIGIN/../lib", o),
            Some(PathBuf::from("/opt/app/bin/../lib"))
        );
        assert_eq!(
            expand_origin("${ORIGIN}", o),
            Some(PathBuf::from("/opt/app/bin"))
        );
        assert_eq!(expand_origin("$LIB/x", o), None);
        assert_eq!(expand_origin("lib", o), None);
    }
}
