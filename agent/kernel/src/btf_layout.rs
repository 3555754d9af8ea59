//! Where a kernel struct keeps a member, read from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! mcp-guard's eBPF programs are built without CO-RE, so a program that must read a kernel
//! struct gets the offsets from userspace at load time. aya-obj parses BTF but does not expose
//! struct members, so this walks the type section itself: only what finding a member needs.

use std::path::Path;

/// The kernel's BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

// BTF kinds (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// What a member's type is, once typedefs and qualifiers are looked through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberType {
    /// A pointer (8 bytes on the 64-bit targets mcp-guard supports).
    Pointer,
    /// An integer of this many bytes.
    Int(u32),
    /// Anything else.
    Other,
}

/// One member of a struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the struct.
    pub offset: u32,
    /// Its type.
    pub ty: MemberType,
}

/// A parsed BTF blob: where each type record starts (by id; id 0 is `void`), and the string
/// section.
pub struct Btf<'a> {
    /// Offset of each type record in `type_data`; index 0 stands for `void`.
    starts: Vec<u32>,
    /// (name offset, id) of every struct.
    structs: Vec<(u32, u32)>,
    type_data: &'a [u8],
    strings: &'a [u8],
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// A type record's fields: kind, `kind_flag`, vlen, size-or-type, trailing data.
struct Record {
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
    extra: usize,
}

impl<'a> Btf<'a> {
    /// Parses `data` (in this host's byte order, as the running kernel exposes it).
    pub fn parse(data: &'a [u8]) -> Result<Self, String> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .ok_or("BTF shorter than its header")?;
        if magic != MAGIC {
            return Err(format!(
                "not BTF in this host's byte order (magic {magic:#x})"
            ));
        }
        let field = |at| u32_at(data, at).ok_or("BTF header cut short");
        let hdr_len = field(4)? as usize;
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let section = |off: usize, len: usize| {
            let start = hdr_len
                .checked_add(off)
                .ok_or("BTF section offset overflows")?;
            let end = start
                .checked_add(len)
                .ok_or("BTF section length overflows")?;
            data.get(start..end).ok_or("BTF section out of bounds")
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut btf = Self {
            starts: vec![0],
            structs: Vec::new(),
            type_data,
            strings,
        };
        // The kernel's BTF has well over 100k types: one tight pass recording where each
        // starts; fields are decoded only for the few types looked at.
        let mut at = 0usize;
        while at < type_data.len() {
            let info = u32_at(type_data, at + 4).ok_or("BTF type record cut short")?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            if kind == KIND_STRUCT {
                let name_off = u32_at(type_data, at).ok_or("BTF type record cut short")?;
                let index = u32::try_from(btf.starts.len()).map_err(|_| "over 2^32 BTF types")?;
                btf.structs.push((name_off, index));
            }
            let trailing = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
                2 | 7 | 8..=12 | 16 | 18 => 0,
                other => return Err(format!("unknown BTF kind {other} at byte {at}")),
            };
            btf.starts
                .push(u32::try_from(at).map_err(|_| "BTF type section over 4 GiB")?);
            at += 12 + trailing;
        }
        if at != type_data.len() {
            return Err("BTF type section cut short".into());
        }
        Ok(btf)
    }

    fn record(&self, id: u32) -> Option<Record> {
        if id == 0 {
            return None;
        }
        let at = *self.starts.get(id as usize)? as usize;
        let info = u32_at(self.type_data, at + 4)?;
        Some(Record {
            kind: (info >> 24) & 0x1f,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            size_or_type: u32_at(self.type_data, at + 8)?,
            extra: at + 12,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..memchr::memchr(0, rest).unwrap_or(rest.len())]
    }

    /// The kind of `id` with typedefs, qualifiers and type tags looked through.
    fn resolve(&self, mut id: u32) -> MemberType {
        for _ in 0..32 {
            let Some(t) = self.record(id) else {
                return MemberType::Other;
            };
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                KIND_PTR => return MemberType::Pointer,
                KIND_INT => return MemberType::Int(t.size_or_type),
                _ => return MemberType::Other,
            }
        }
        MemberType::Other
    }

    /// The named members of the struct `name` (the first struct of that name), in the order
    /// asked for. A member that is missing, a bitfield or not byte-aligned is an error.
    pub fn struct_members(&self, name: &str, members: &[&str]) -> Result<Vec<Member>, String> {
        let missing = || format!("the kernel BTF has no struct {name}");
        let named = |off: u32| {
            let off = off as usize;
            self.strings.get(off..off + name.len()) == Some(name.as_bytes())
                && self.strings.get(off + name.len()) == Some(&0)
        };
        let st = self
            .structs
            .iter()
            .find(|(off, _)| named(*off))
            .and_then(|(_, id)| self.record(*id))
            .ok_or_else(missing)?;
        members
            .iter()
            .map(|want| {
                for i in 0..st.vlen {
                    let at = st.extra + 12 * i;
                    let word = |k| u32_at(self.type_data, at + k).unwrap_or_default();
                    if self.name(word(0)) != want.as_bytes() {
                        continue;
                    }
                    let raw = word(8);
                    let (bits, bitfield) = if st.kind_flag {
                        (raw & 0xff_ffff, raw >> 24 != 0)
                    } else {
                        (raw, false)
                    };
                    if bitfield || bits % 8 != 0 {
                        return Err(format!("{name}.{want} is a bitfield"));
                    }
                    return Ok(Member {
                        offset: bits / 8,
                        ty: self.resolve(word(4)),
                    });
                }
                Err(format!("struct {name} has no member {want}"))
            })
            .collect()
    }
}

/// The kernel's BTF, read whole.
pub fn read_vmlinux() -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(VMLINUX)).map_err(|e| format!("{VMLINUX}: {e}"))
}

/// The kernel's BTF, read once per process: the loader's tracepoints and the struct layouts
/// parse the same bytes (sysfs hands the file out a page per read, so each read costs).
pub fn vmlinux() -> Result<&'static [u8], String> {
    static DATA: std::sync::OnceLock<Result<Vec<u8>, String>> = std::sync::OnceLock::new();
    DATA.get_or_init(read_vmlinux)
        .as_deref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `int`, `char *`, a typedef and `struct s { char *p; u32 n; int b:3; }`.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a test blob of a few dozen bytes"
    )]
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0p\0n\0b\0u32\0char\0".to_vec();
        let name = |s: &str| -> u32 {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .expect("name in table") as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_ne_bytes());
            }
        };
        // 1: int (4 bytes, 32 bits).
        push(&[name("int"), KIND_INT << 24, 4, 32]);
        // 2: char (1 byte).
        push(&[name("char"), KIND_INT << 24, 1, 8]);
        // 3: char * .
        push(&[0, KIND_PTR << 24, 2]);
        // 4: typedef u32 -> int.
        push(&[name("u32"), KIND_TYPEDEF << 24, 1]);
        // 5: struct s, kind_flag set (bitfield encoding), 3 members, 16 bytes.
        push(&[name("s"), (1 << 31) | (KIND_STRUCT << 24) | 3, 16]);
        push(&[name("p"), 3, 0]);
        push(&[name("n"), 4, 64]);
        #[expect(
            clippy::decimal_bitwise_operands,
            reason = "a 3-bit field at bit 96, as BTF packs it"
        )]
        push(&[name("b"), 1, (3 << 24) | 96]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn members_are_found_with_offsets_and_types() {
        let data = sample();
        let btf = Btf::parse(&data).expect("parses");
        assert_eq!(
            btf.struct_members("s", &["n", "p"]).expect("members"),
            vec![
                Member {
                    offset: 8,
                    ty: MemberType::Int(4)
                },
                Member {
                    offset: 0,
                    ty: MemberType::Pointer
                },
            ]
        );
        assert!(btf.struct_members("s", &["b"]).is_err(), "a bitfield");
        assert!(btf.struct_members("s", &["zz"]).is_err());
        assert!(btf.struct_members("t", &["p"]).is_err());
        assert!(Btf::parse(&data[..20]).is_err());
        let mut bad = data.clone();
        bad[0] ^= 0xff;
        assert!(Btf::parse(&bad).is_err());
    }

    #[test]
    fn the_running_kernel_describes_the_sock_addr_context() {
        // Every kernel mcp-guard runs on has BTF (doctor checks it); this one must.
        let data = read_vmlinux().expect("kernel BTF");
        let btf = Btf::parse(&data).expect("kernel BTF parses");
        let m = btf
            .struct_members("bpf_sock_addr_kern", &["sk", "uaddr"])
            .expect("bpf_sock_addr_kern");
        assert_eq!(m[0].offset, 0);
        assert_eq!(m[1].ty, MemberType::Pointer);
    }
}
