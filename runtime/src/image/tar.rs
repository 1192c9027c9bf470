//! A streaming tar reader (ustar, GNU long names, PAX) that accepts archives ending cleanly
//! after their last entry without end-of-archive blocks (as umoci 0.4.7 writes them), and
//! refuses truncated entries.

use std::collections::BTreeMap;
use std::io::{self, Read};

const BLOCK: usize = 512;
/// PAX and GNU long-name records larger than this are refused (they are held in memory).
const MAX_META: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    Other(u8),
}

#[derive(Clone, Debug)]
pub struct Header {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    /// Nanoseconds of the mtime, from PAX records (ustar headers carry whole seconds).
    pub mtime_nsec: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("archive truncated inside {0}")]
    Truncated(&'static str),
    #[error("bad header checksum at byte {0}")]
    Checksum(u64),
    #[error("bad numeric field {field} in header at byte {offset}")]
    Number { field: &'static str, offset: u64 },
    #[error("bad PAX record: {0}")]
    Pax(String),
    #[error("{what} of {size} bytes is over the limit")]
    MetaTooLarge { what: &'static str, size: u64 },
}

pub struct Reader<R> {
    inner: R,
    /// Unread data bytes of the current entry, then its padding.
    remaining: u64,
    padding: u64,
    offset: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            offset: 0,
            done: false,
        }
    }

    /// The next entry's header, or `None` at the end of the archive.
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        self.skip_rest()?;
        let mut long_name = None;
        let mut long_link = None;
        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        loop {
            if self.done {
                return Ok(None);
            }
            let start = self.offset;
            let Some(block) = self.read_header_block()? else {
                self.done = true;
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                // End-of-archive: anything after is ignored (the caller drains the stream).
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&block, start)?;
            let size = number(&block[124..136], "size", start)?;
            let flag = block[156];
            self.set_entry(size);
            match flag {
                b'L' => long_name = Some(self.read_meta("GNU long name", size)?),
                b'K' => long_link = Some(self.read_meta("GNU long link", size)?),
                b'x' => parse_pax(&self.read_meta("PAX header", size)?, &mut pax)?,
                b'g' => {
                    self.read_meta("PAX global header", size)?;
                }
                _ => {
                    let mut h = parse_header(&block, start)?;
                    apply_overrides(&mut h, long_name, long_link, &pax, start)?;
                    // Non-regular entries may carry data too; it is skipped with the rest.
                    self.set_entry(h.size);
                    return Ok(Some(h));
                }
            }
        }
    }

    /// Read the current entry's data.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { r: self }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn set_entry(&mut self, size: u64) {
        self.remaining = size;
        self.padding = pad(size);
    }

    fn read_meta(&mut self, what: &'static str, size: u64) -> Result<Vec<u8>, TarError> {
        if size > MAX_META {
            return Err(TarError::MetaTooLarge { what, size });
        }
        let mut buf = vec![0u8; size as usize];
        self.read_data_exact(&mut buf, what)?;
        self.skip_rest()?;
        Ok(buf)
    }

    fn read_data_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.inner.read(&mut buf[filled..])?;
            if n == 0 {
                return Err(TarError::Truncated(what));
            }
            filled += n;
        }
        self.remaining -= buf.len() as u64;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Skip unread data (truncation there is an error) and padding (a clean end there is not).
    fn skip_rest(&mut self) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while self.remaining > 0 {
            let want = self.remaining.min(buf.len() as u64) as usize;
            let n = self.inner.read(&mut buf[..want])?;
            if n == 0 {
                return Err(TarError::Truncated("entry data"));
            }
            self.remaining -= n as u64;
            self.offset += n as u64;
        }
        while self.padding > 0 {
            let want = self.padding.min(buf.len() as u64) as usize;
            let n = self.inner.read(&mut buf[..want])?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.padding -= n as u64;
            self.offset += n as u64;
        }
        self.padding = 0;
        Ok(())
    }

    /// A whole block, or `None` on a clean end right at a block boundary.
    fn read_header_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            let n = self.inner.read(&mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(None);
                }
                return Err(TarError::Truncated("header"));
            }
            filled += n;
        }
        self.offset += BLOCK as u64;
        Ok(Some(block))
    }
}

pub struct EntryData<'a, R> {
    r: &'a mut Reader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.r.remaining == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.r.remaining) as usize;
        let n = self.r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive truncated inside entry data",
            ));
        }
        self.r.remaining -= n as u64;
        self.r.offset += n as u64;
        Ok(n)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn verify_checksum(block: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
    let stored = number(&block[148..156], "checksum", offset)?;
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as i8 as i64
            }
        })
        .sum();
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(TarError::Checksum(offset))
    }
}

/// Octal (NUL/space padded) or GNU base-256 (high bit set).
fn number(field: &[u8], name: &'static str, offset: u64) -> Result<u64, TarError> {
    let err = || TarError::Number {
        field: name,
        offset,
    };
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err(err());
        }
        let mut v: u64 = (field[0] & 0x3f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256).ok_or_else(err)? | b as u64;
        }
        return Ok(v);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    if s.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&s).map_err(|_| err())?;
    u64::from_str_radix(text, 8).map_err(|_| err())
}

fn cstr(field: &[u8]) -> Vec<u8> {
    field.iter().copied().take_while(|&b| b != 0).collect()
}

fn parse_header(b: &[u8; BLOCK], offset: u64) -> Result<Header, TarError> {
    let mut path = cstr(&b[0..100]);
    let ustar = &b[257..262] == b"ustar";
    if ustar {
        let prefix = cstr(&b[345..500]);
        // GNU tar uses part of the prefix field for times; only ustar proper ("ustar\0") has it.
        if !prefix.is_empty() && &b[257..263] == b"ustar\0" {
            let mut full = prefix;
            full.push(b'/');
            full.extend_from_slice(&path);
            path = full;
        }
    }
    let flag = b[156];
    let kind = match flag {
        b'0' | 0 | b'7' => Kind::Regular,
        b'1' => Kind::HardLink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' => Kind::Dir,
        b'6' => Kind::Fifo,
        other => Kind::Other(other),
    };
    // Old archives mark directories only with a trailing slash.
    let kind = if kind == Kind::Regular && path.ends_with(b"/") {
        Kind::Dir
    } else {
        kind
    };
    Ok(Header {
        link: cstr(&b[157..257]),
        kind,
        mode: number(&b[100..108], "mode", offset)? as u32 & 0o7777,
        uid: number(&b[108..116], "uid", offset)?,
        gid: number(&b[116..124], "gid", offset)?,
        size: number(&b[124..136], "size", offset)?,
        mtime: number(&b[136..148], "mtime", offset)? as i64,
        mtime_nsec: 0,
        dev_major: if ustar {
            number(&b[329..337], "devmajor", offset)? as u32
        } else {
            0
        },
        dev_minor: if ustar {
            number(&b[337..345], "devminor", offset)? as u32
        } else {
            0
        },
        path,
        xattrs: BTreeMap::new(),
    })
}

fn apply_overrides(
    h: &mut Header,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: &BTreeMap<String, Vec<u8>>,
    offset: u64,
) -> Result<(), TarError> {
    if let Some(n) = long_name {
        h.path = cstr(&n);
    }
    if let Some(l) = long_link {
        h.link = cstr(&l);
    }
    let num = |v: &[u8], field: &'static str| -> Result<u64, TarError> {
        let s = std::str::from_utf8(v).map_err(|_| TarError::Number { field, offset })?;
        // Fractional seconds are dropped; negative times are clamped to the epoch.
        let int = s.split('.').next().unwrap_or("0");
        if int.starts_with('-') {
            return Ok(0);
        }
        int.parse().map_err(|_| TarError::Number { field, offset })
    };
    for (k, v) in pax {
        match k.as_str() {
            "path" => h.path = v.clone(),
            "linkpath" => h.link = v.clone(),
            "size" => h.size = num(v, "pax size")?,
            "uid" => h.uid = num(v, "pax uid")?,
            "gid" => h.gid = num(v, "pax gid")?,
            "mtime" => {
                h.mtime = num(v, "pax mtime")? as i64;
                h.mtime_nsec = pax_nanos(v);
            }
            _ => {
                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                    h.xattrs.insert(name.to_string(), v.clone());
                } else if let Some(name) = k.strip_prefix("LIBARCHIVE.xattr.") {
                    h.xattrs.insert(name.to_string(), v.clone());
                }
            }
        }
    }
    Ok(())
}

/// The fractional part of a PAX time (`1700000000.5` → 500000000); 0 when absent or negative.
fn pax_nanos(v: &[u8]) -> u32 {
    if v.first() == Some(&b'-') {
        return 0;
    }
    let Some(dot) = v.iter().position(|&b| b == b'.') else {
        return 0;
    };
    let digits: Vec<u8> = v[dot + 1..].iter().copied().take(9).collect();
    if digits.iter().any(|b| !b.is_ascii_digit()) {
        return 0;
    }
    let mut n: u32 = 0;
    for i in 0..9 {
        n = n * 10 + digits.get(i).map_or(0, |d| (d - b'0') as u32);
    }
    n
}

/// Records are `<len> <key>=<value>\n`, `len` counting the whole record.
fn parse_pax(data: &[u8], out: &mut BTreeMap<String, Vec<u8>>) -> Result<(), TarError> {
    let mut rest = data;
    while !rest.is_empty() && rest[0] != 0 {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| TarError::Pax("record without length".into()))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TarError::Pax("bad record length".into()))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(TarError::Pax("record length out of range".into()));
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| TarError::Pax("record without '='".into()))?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        out.insert(key, record[eq + 1..].to_vec());
        rest = &rest[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, flag: u8, size: u64) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..107].copy_from_slice(b"0000644");
        b[108..115].copy_from_slice(b"0000000");
        b[116..123].copy_from_slice(b"0000000");
        b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        b[136..147].copy_from_slice(b"00000000000");
        b[156] = flag;
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        b[148..156].copy_from_slice(b"        ");
        let sum: u64 = b.iter().map(|&x| x as u64).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        b
    }

    fn archive(end_blocks: bool, pad_last: bool) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&header("a", b'0', 3));
        v.extend_from_slice(b"abc");
        v.extend(std::iter::repeat_n(0, 509));
        v.extend_from_slice(&header("b", b'0', 2));
        v.extend_from_slice(b"xy");
        if pad_last {
            v.extend(std::iter::repeat_n(0, 510));
        }
        if end_blocks {
            v.extend(std::iter::repeat_n(0, 1024));
        }
        v
    }

    fn names(data: &[u8]) -> Result<Vec<String>, TarError> {
        let mut r = Reader::new(data);
        let mut out = Vec::new();
        while let Some(h) = r.next_header()? {
            let mut s = String::new();
            r.data().read_to_string(&mut s)?;
            out.push(format!("{}={s}", String::from_utf8_lossy(&h.path)));
        }
        Ok(out)
    }

    #[test]
    fn reads_with_and_without_end_blocks() {
        let want = vec!["a=abc".to_string(), "b=xy".to_string()];
        assert_eq!(names(&archive(true, true)).unwrap(), want);
        assert_eq!(names(&archive(false, true)).unwrap(), want);
        assert_eq!(names(&archive(false, false)).unwrap(), want);
    }

    #[test]
    fn refuses_truncation() {
        let a = archive(false, true);
        assert!(names(&a[..512 + 2]).is_err(), "truncated data");
        assert!(names(&a[..1024 + 100]).is_err(), "truncated header");
        let mut bad = archive(true, true);
        bad[0] = b'z';
        assert!(matches!(names(&bad), Err(TarError::Checksum(0))));
    }

    #[test]
    fn pax_records() {
        let mut m = BTreeMap::new();
        parse_pax(b"16 path=foo/bar\n28 SCHILY.xattr.user.a=1234\n", &mut m).unwrap();
        assert_eq!(m["path"], b"foo/bar");
        assert_eq!(m["SCHILY.xattr.user.a"], b"1234");
        assert!(parse_pax(b"99 path=x\n", &mut m).is_err());
        assert_eq!(pax_nanos(b"1700000000.25"), 250_000_000);
        assert_eq!(pax_nanos(b"1700000000"), 0);
        assert_eq!(pax_nanos(b"1.1234567891"), 123_456_789);
    }
}
