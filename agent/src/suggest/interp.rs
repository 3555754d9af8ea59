//! What the kernel runs besides an executed file: the ELF interpreter a dynamically linked
//! program names (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`) and the `#!` interpreter of a
//! script. Landlock checks the execute right on both, but only the file itself appears in the
//! exec event, so the suggestion adds them.

use std::{fs::File, io::Read, path::Path};

/// The interpreter the kernel loads to run `path`, if any (and if it can be read).
pub(super) fn interpreter(path: &Path) -> Option<String> {
    let mut head = Vec::new();
    File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|b| *b == b'\n').next()?;
        let line = std::str::from_utf8(line).ok()?;
        return line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
            .map(str::to_string);
    }
    elf_interp(&head, path)
}

/// `PT_INTERP` of a 64-bit little-endian ELF file (the program headers are near the start; the
/// interpreter string is read from the file if it lies beyond `head`).
fn elf_interp(head: &[u8], path: &Path) -> Option<String> {
    const PT_INTERP: u32 = 3;
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let off = u64_at(ph + 8)?;
        let len = usize::try_from(u64_at(ph + 32)?).ok()?.min(4096);
        let mut buf = vec![0u8; len];
        let mut f = File::open(path).ok()?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(off)).ok()?;
        f.read_exact(&mut buf).ok()?;
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        return String::from_utf8(buf[..end].to_vec()).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_names_its_loader() {
        // /bin/sh is dynamically linked on every host these tests run on.
        let interp = interpreter(Path::new("/bin/sh")).expect("PT_INTERP of /bin/sh");
        assert!(interp.contains("ld-linux"), "{interp}");
    }

    #[test]
    fn a_script_names_its_interpreter() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-interp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let script = dir.join("s");
        std::fs::write(&script, "#!/usr/bin/env python3\nprint(1)\n").expect("write");
        assert_eq!(interpreter(&script).as_deref(), Some("/usr/bin/env"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
