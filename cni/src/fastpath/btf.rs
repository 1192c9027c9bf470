//! What the fast path's programs need from the kernel's own BTF (`/sys/kernel/btf/vmlinux`): the
//! ids of the conntrack kfuncs they call, and where `status` sits in `struct nf_conn`, both of
//! which differ from build to build.

use super::FastPathError;

type Result<T> = std::result::Result<T, FastPathError>;

fn bad(what: impl Into<String>) -> FastPathError {
    FastPathError::Btf(what.into())
}

const PATH: &str = "/sys/kernel/btf/vmlinux";
const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;

/// The conntrack kfuncs' BTF ids and `nf_conn.status`'s byte offset.
#[derive(Clone, Copy, Debug)]
pub struct Conntrack {
    pub lookup: i32,
    pub release: i32,
    pub change_timeout: i32,
    pub status: i16,
}

/// One type's header, and where its trailing data starts.
struct Type {
    id: i32,
    name: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    data: usize,
}

/// Bytes of the data that follows a type's header, by kind (see the kernel's btf.rst).
fn trailing(kind: u32, vlen: usize) -> usize {
    match kind {
        1 | 14 | 17 => 4,
        3 => 12,
        4 | 5 | 15 | 19 => vlen * 12,
        6 | 13 => vlen * 8,
        _ => 0,
    }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| bad(format!("{PATH} ends early")))?;
    Ok(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn str_at(strings: &[u8], off: u32) -> &[u8] {
    let s = strings.get(off as usize..).unwrap_or_default();
    &s[..s.iter().position(|c| *c == 0).unwrap_or(s.len())]
}

fn types(b: &[u8]) -> Result<(Vec<Type>, &[u8], &[u8])> {
    if b.get(..2) != Some(&0xeb9fu16.to_ne_bytes()[..]) {
        return Err(bad(format!("{PATH}: not BTF")));
    }
    let hdr = u32_at(b, 4)? as usize;
    let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
    let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
    let section = |off: usize, len: usize| b.get(hdr + off..hdr + off + len);
    let tys = section(type_off, type_len).ok_or_else(|| bad("BTF type section out of bounds"))?;
    let strings =
        section(str_off, str_len).ok_or_else(|| bad("BTF string section out of bounds"))?;
    let (mut out, mut at) = (Vec::new(), 0);
    while at < tys.len() {
        let info = u32_at(tys, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        out.push(Type {
            id: i32::try_from(out.len() + 1).map_err(|_| bad("too many BTF types"))?,
            name: u32_at(tys, at)?,
            kind,
            vlen,
            kind_flag: info >> 31 == 1,
            data: at + 12,
        });
        at += 12 + trailing(kind, vlen);
    }
    Ok((out, tys, strings))
}

/// Read from the running kernel.
pub fn conntrack() -> Result<Conntrack> {
    let b = std::fs::read(PATH).map_err(|e| bad(format!("read {PATH}: {e}")))?;
    let (all, tys, strings) = types(&b)?;
    let func = |name: &str| {
        all.iter()
            .find(|t| t.kind == KIND_FUNC && str_at(strings, t.name) == name.as_bytes())
            .map(|t| t.id)
            .ok_or_else(|| {
                bad(format!(
                    "{PATH}: no kfunc {name} (conntrack's BPF kfuncs not built)"
                ))
            })
    };
    let nf_conn = all
        .iter()
        .find(|t| t.kind == KIND_STRUCT && str_at(strings, t.name) == b"nf_conn")
        .ok_or_else(|| bad("no struct nf_conn in the kernel's BTF (conntrack not built)"))?;
    let mut status = None;
    for m in 0..nf_conn.vlen {
        let at = nf_conn.data + m * 12;
        if str_at(strings, u32_at(tys, at)?) == b"status" {
            let bits = u32_at(tys, at + 8)?;
            // With kind_flag set, the low 24 bits are the offset and the high 8 a bitfield's size.
            let bits = if nf_conn.kind_flag {
                bits & 0xff_ffff
            } else {
                bits
            };
            status = i16::try_from(bits / 8).ok();
        }
    }
    Ok(Conntrack {
        lookup: func("bpf_skb_ct_lookup")?,
        release: func("bpf_ct_release")?,
        change_timeout: func("bpf_ct_change_timeout")?,
        status: status.ok_or_else(|| bad("struct nf_conn has no status"))?,
    })
}
