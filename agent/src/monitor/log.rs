//! The CRI log format kubelet reads: one record per line, `TIMESTAMP STREAM TAG MESSAGE\n`, where the
//! timestamp is RFC 3339 with nanoseconds, the stream `stdout` or `stderr`, and the tag `F` for a full
//! line or `P` for a part of a line longer than [`MAX_LINE`] (the last part is `F`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The longest message one record holds, as kubelet's readers expect.
pub const MAX_LINE: usize = 16 * 1024;

/// Splits one stream's bytes into records.
#[derive(Default)]
pub struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    /// Adds `data` and hands every complete record to `emit(message, partial)`.
    pub fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            let nl = rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n');
            match nl {
                Some(i) => {
                    // A terminal ends lines with CRLF; the record holds the line without either.
                    let line = &rest[..i];
                    emit(line.strip_suffix(b"\r").unwrap_or(line), false);
                    start += i + 1;
                }
                None if rest.len() > MAX_LINE => {
                    emit(&rest[..MAX_LINE], true);
                    start += MAX_LINE;
                }
                None => break,
            }
        }
        self.buf.drain(..start);
    }

    /// At end of stream: an unterminated last line is still a full record.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, false);
            self.buf.clear();
        }
    }
}

/// The container's log file; `None` path discards output.
pub struct CriLog {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl CriLog {
    pub fn open(path: Option<&Path>) -> std::io::Result<CriLog> {
        let mut log = CriLog {
            path: path.map(Path::to_path_buf),
            file: None,
        };
        log.reopen()?;
        Ok(log)
    }

    /// A log that drops everything.
    pub fn discard() -> CriLog {
        CriLog {
            path: None,
            file: None,
        }
    }

    /// Opens the path anew (creating it): after a rotation renamed the old file away.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        self.file = Some(f);
        Ok(())
    }

    /// Writes one record; a failing disk loses the record rather than stopping the container.
    pub fn record(&mut self, stream: &str, msg: &[u8], partial: bool) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ts = skiff_runtime::state::rfc3339(now.as_secs() as i64, now.subsec_nanos());
        let tag = if partial { "P" } else { "F" };
        let mut line = Vec::with_capacity(msg.len() + ts.len() + 12);
        line.extend_from_slice(ts.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.push(b' ');
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(msg);
        line.push(b'\n');
        if let Err(e) = f.write_all(&line) {
            eprintln!("skiff-monitor: write log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut lb = LineBuf::default();
        for c in chunks {
            lb.feed(c, &mut |m, p| out.push((m.to_vec(), p)));
        }
        lb.finish(&mut |m, p| out.push((m.to_vec(), p)));
        out
    }

    #[test]
    fn lines_across_reads() {
        let out = split(&[b"he", b"llo\nwor", b"ld\r\n\nlast"]);
        let want: Vec<(Vec<u8>, bool)> = vec![
            (b"hello".to_vec(), false),
            (b"world".to_vec(), false),
            (b"".to_vec(), false),
            (b"last".to_vec(), false),
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn long_lines_are_split_partial_then_full() {
        let long = vec![b'x'; 20 * 1024];
        let mut data = long.clone();
        data.push(b'\n');
        let out = split(&[&data[..5000], &data[5000..]]);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0.len(), out[0].1), (MAX_LINE, true));
        assert_eq!((out[1].0.len(), out[1].1), (20 * 1024 - MAX_LINE, false));
        let exact = [vec![b'y'; MAX_LINE], vec![b'\n']].concat();
        let out = split(&[&exact]);
        assert_eq!(out, vec![(vec![b'y'; MAX_LINE], false)]);
    }
}
