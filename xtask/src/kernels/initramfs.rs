//! The guest's initramfs: busybox, the kernel modules the boot needs, and an init that mounts
//! this machine's root (shared read-only over virtiofs) under a tmpfs overlay and switches into it.
//!
//! Written here as a cpio "newc" archive, the format the kernel unpacks (see the kernel's
//! Documentation/driver-api/early-userspace/buffer-format.rst).

use std::{fs, path::Path};

use crate::Result;

/// The virtiofs tag the host's root is exported under (vm.rs uses the same).
pub(super) const ROOT_TAG: &str = "mcpg-root";

/// The first program the kernel runs. Modules load in the order given (dependencies first).
/// The run script's path comes from `mcpg.run=` on the kernel command line. On any failure it
/// says what failed and powers off, so the host never waits for its timeout on a broken boot.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
fail() { echo "MCPG-INIT-FAIL $*"; poweroff -f; sleep 60; }
mkdir -p /proc /sys /dev /lower /rw /newroot
mount -t proc proc /proc || fail "mount proc"
mount -t sysfs sysfs /sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || fail "insmod $m"
done
mount -t virtiofs -o ro "@TAG@" /lower || fail "mount virtiofs tag @TAG@"
mount -t tmpfs -o mode=0755 overlay-rw /rw || fail "mount tmpfs for the overlay"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "mount overlay (virtiofs lower, tmpfs upper)"
run=$(sed -n 's/.*mcpg\.run=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$run" ] || fail "no mcpg.run= on the kernel command line"
[ -f "/newroot$run" ] || fail "run script $run is not on the shared root"
[ -x /newroot/bin/busybox ] || fail "/bin/busybox is missing on the shared root (install busybox-static)"
for d in proc sys dev; do mount --move "/$d" "/newroot/$d" || fail "move /$d"; done
exec switch_root /newroot /bin/busybox sh "$run"
fail "switch_root"
"#;

/// One file of the archive.
struct Entry<'a> {
    name: &'a str,
    mode: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

#[expect(clippy::unreadable_literal, reason = "as <sys/stat.h> spells it")]
const S_IFDIR: u32 = 0o040000;
#[expect(clippy::unreadable_literal, reason = "as <sys/stat.h> spells it")]
const S_IFREG: u32 = 0o100000;
#[expect(clippy::unreadable_literal, reason = "as <sys/stat.h> spells it")]
const S_IFCHR: u32 = 0o020000;

/// Writes `entries` as a newc archive (with the trailer).
fn cpio(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let trailer = Entry {
        name: "TRAILER!!!",
        mode: 0,
        rdev: (0, 0),
        data: &[],
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "newc's header fields are 32-bit; the guest's few files are far smaller"
    )]
    for (ino, e) in entries.iter().chain(std::iter::once(&trailer)).enumerate() {
        let fields = [
            ino as u32 + 1,
            e.mode,
            0, // uid
            0, // gid
            if e.mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime: the archive is the same for the same inputs
            e.data.len() as u32,
            0,
            0,
            e.rdev.0,
            e.rdev.1,
            e.name.len() as u32 + 1,
            0, // check: unused in newc
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(e.name.as_bytes());
        out.push(0);
        pad4(&mut out);
        out.extend_from_slice(e.data);
        pad4(&mut out);
    }
    out
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Builds the initramfs at `dest` from the static busybox and `modules` (name, uncompressed
/// `.ko` path), loaded in the given order.
pub(super) fn build(
    dest: &Path,
    busybox: &Path,
    modules: &[(String, std::path::PathBuf)],
) -> Result {
    let read = |p: &Path| fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let busybox = read(busybox)?;
    let init = INIT.replace("@TAG@", ROOT_TAG);
    let mut module_bytes = Vec::new();
    for (name, path) in modules {
        module_bytes.push((format!("modules/{name}.ko"), read(path)?));
    }
    let order: String = modules.iter().map(|(n, _)| format!("{n}\n")).collect();
    let dir = |name| Entry {
        name,
        mode: S_IFDIR | 0o755,
        rdev: (0, 0),
        data: &[],
    };
    let file = |name, mode, data| Entry {
        name,
        mode: S_IFREG | mode,
        rdev: (0, 0),
        data,
    };
    let mut entries = vec![
        dir("bin"),
        dir("dev"),
        // The kernel opens /dev/console for init's stdin/stdout/stderr before devtmpfs exists.
        Entry {
            name: "dev/console",
            mode: S_IFCHR | 0o600,
            rdev: (5, 1),
            data: &[],
        },
        dir("modules"),
        file("bin/busybox", 0o755, &busybox),
        file("init", 0o755, init.as_bytes()),
        file("modules/order", 0o644, order.as_bytes()),
    ];
    for (name, data) in &module_bytes {
        entries.push(file(name, 0o644, data));
    }
    let archive = cpio(&entries);
    fs::write(dest, archive).map_err(|e| format!("{}: {e}", dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_headers_are_aligned_and_end_with_the_trailer() {
        let data = b"hello";
        let archive = cpio(&[Entry {
            name: "a",
            mode: S_IFREG | 0o644,
            rdev: (0, 0),
            data,
        }]);
        assert!(archive.starts_with(b"070701"));
        // Header 110 bytes + "a\0" = 112 (aligned), then 5 bytes of data padded to 8.
        assert_eq!(&archive[112..117], data);
        assert_eq!(&archive[120..126], b"070701");
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("TRAILER!!!"));
        assert_eq!(archive.len() % 4, 0);
        // filesize field of the first entry (7th field): 5.
        assert_eq!(&archive[6 + 6 * 8..6 + 7 * 8], b"00000005");
    }
}
