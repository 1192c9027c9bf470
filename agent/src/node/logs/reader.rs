//! Reads one CRI log file the way `kubectl logs` wants it: from the `tailLines`-th last line,
//! records from `since` on, prefixed with their times or not, up to `limitBytes`, and, when
//! following, on through rotations (the file renamed away and a new one at the same path) until
//! the container is gone. Following polls on a timer: a follower costs a task, never a thread.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader, SeekFrom};
use tokio::sync::mpsc;

use super::format;

/// How often a follower looks for new lines.
const POLL: Duration = Duration::from_millis(100);
/// Bytes read from the file at once, and sent to the client at once.
const READ_CHUNK: usize = 256 * 1024;
const SEND_CHUNK: usize = 64 * 1024;

/// What the caller asked for (kubelet's `PodLogOptions`, parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub follow: bool,
    pub tail_lines: Option<u64>,
    /// Nanoseconds since the epoch: records before it are left out.
    pub since: Option<i64>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
}

/// Turns records into the bytes the client reads.
struct Writer<'a> {
    opts: &'a Options,
    remaining: Option<u64>,
    /// The last record was partial: the next one continues its line and takes no time prefix.
    in_line: bool,
    /// Output not sent yet: lines go out in chunks, and whatever is pending when the file has no
    /// more for now.
    pending: Vec<u8>,
    out: &'a mpsc::Sender<Bytes>,
}

/// Why writing stopped.
enum Stop {
    Limit,
    Closed,
}

impl Writer<'_> {
    async fn line(&mut self, raw: &[u8]) -> Result<(), Stop> {
        let rec = match format::parse(raw) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "skip a malformed log line");
                return Ok(());
            }
        };
        if self.opts.since.is_some_and(|s| rec.time < s) {
            return Ok(());
        }
        let start = self.pending.len();
        if self.opts.timestamps && !self.in_line {
            self.pending
                .extend_from_slice(format::format_time(rec.time).as_bytes());
            self.pending.push(b' ');
        }
        self.pending.extend_from_slice(rec.message);
        if !rec.partial {
            self.pending.push(b'\n');
        }
        self.in_line = rec.partial;
        if let Some(left) = self.remaining.as_mut() {
            let added = (self.pending.len() - start) as u64;
            if added >= *left {
                self.pending.truncate(start + *left as usize);
                *left = 0;
                self.flush().await?;
                return Err(Stop::Limit);
            }
            *left -= added;
        }
        if self.pending.len() >= SEND_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.pending));
        self.out.send(chunk).await.map_err(|_| Stop::Closed)
    }
}

/// The offset at which the last `n` lines of `f` start (a last line without its newline counts).
pub async fn tail_offset(f: &mut File, n: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let len = f.metadata().await?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut seen = 0u64;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut first = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start)).await?;
        f.read_exact(chunk).await?;
        for i in (0..chunk.len()).rev() {
            if chunk[i] != b'\n' {
                continue;
            }
            // The newline that ends the file ends the last line; it starts no line.
            if first && start + i as u64 == len - 1 {
                continue;
            }
            seen += 1;
            if seen >= n {
                return Ok(start + i as u64 + 1);
            }
        }
        first = false;
        end = start;
    }
    Ok(0)
}

async fn open_at(path: &Path, offset: u64) -> std::io::Result<(BufReader<File>, u64)> {
    let mut f = File::open(path).await?;
    let ino = f.metadata().await?.ino();
    f.seek(SeekFrom::Start(offset)).await?;
    Ok((BufReader::with_capacity(READ_CHUNK, f), ino))
}

/// Whether `path` is now another file than inode `ino`: the log was rotated.
async fn replaced(path: &Path, ino: u64) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| m.ino() != ino)
}

/// The file a follower reads, and how to tell when to stop.
pub struct Source<A> {
    pub path: PathBuf,
    /// Whether the container still runs (checked only when following and at the end of the file).
    pub alive: A,
}

/// Copies the log at `src.path` to `out` as `opts` asks; returns when done, when the limit is
/// reached, or when the receiver went away.
pub async fn copy<A: FnMut() -> bool>(
    mut src: Source<A>,
    opts: &Options,
    out: &mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let start = match opts.tail_lines {
        Some(n) => tail_offset(&mut File::open(&src.path).await?, n).await?,
        None => 0,
    };
    let (mut reader, mut ino) = open_at(&src.path, start).await?;
    let mut w = Writer {
        opts,
        remaining: opts.limit_bytes,
        in_line: false,
        pending: Vec::with_capacity(SEND_CHUNK),
        out,
    };
    let mut line = Vec::new();
    let mut last_pass = false;
    let mut rotated = false;
    loop {
        reader.read_until(b'\n', &mut line).await?;
        if line.ends_with(b"\n") {
            if w.line(&line).await.is_err() {
                return Ok(());
            }
            line.clear();
            continue;
        }
        // At the end of the file; `line` holds whatever part of a line is written so far.
        if !opts.follow || last_pass || out.is_closed() {
            if !line.is_empty() && w.line(&line).await.is_err() {
                return Ok(());
            }
            let _ = w.flush().await;
            return Ok(());
        }
        if w.flush().await.is_err() {
            return Ok(());
        }
        if rotated {
            // The old file is read to its end: go on with the new one from its start.
            rotated = false;
            line.clear();
            match open_at(&src.path, 0).await {
                Ok((r, i)) => (reader, ino) = (r, i),
                // Gone again before it could be opened: looked for anew after a pause.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tokio::time::sleep(POLL).await
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        if replaced(&src.path, ino).await {
            // Lines written between the last read and the rename are read first.
            rotated = true;
            continue;
        }
        // Lines written before the container ended are read in one more pass.
        last_pass = !(src.alive)();
        if !last_pass {
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const T0: &str = "2026-12-06T16:00:00.000000001Z";

    fn write_log(path: &Path, lines: &[&str]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    async fn read(path: &Path, opts: Options) -> String {
        let (tx, mut rx) = mpsc::channel(4);
        let src = Source {
            path: path.into(),
            alive: || false,
        };
        let opts2 = opts.clone();
        let task = tokio::spawn(async move { copy(src, &opts2, &tx).await });
        let mut s = Vec::new();
        while let Some(b) = rx.recv().await {
            s.extend_from_slice(&b);
        }
        task.await.unwrap().unwrap();
        String::from_utf8(s).unwrap()
    }

    fn sample(dir: &Path) -> PathBuf {
        let p = dir.join("0.log");
        write_log(
            &p,
            &[
                &format!("{T0} stdout F one"),
                "2026-12-06T16:00:01.5Z stderr F two",
                "not a cri line",
                "2026-12-06T16:00:02Z stdout P thr",
                "2026-12-06T16:00:02.1Z stdout F ee",
                "2026-12-06T16:00:03Z stdout F four",
            ],
        );
        p
    }

    #[tokio::test]
    async fn options_select_and_shape_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample(dir.path());
        let all = read(&p, Options::default()).await;
        assert_eq!(all, "one\ntwo\nthree\nfour\n");
        let tail = |n| Options {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(read(&p, tail(1)).await, "four\n");
        assert_eq!(read(&p, tail(3)).await, "three\nfour\n");
        assert_eq!(read(&p, tail(0)).await, "");
        assert_eq!(read(&p, tail(100)).await, all);
        let since = Options {
            since: Some(format::parse_time("2026-12-06T16:00:01.5Z").unwrap()),
            ..Default::default()
        };
        assert_eq!(read(&p, since).await, "two\nthree\nfour\n");
        let ts = Options {
            timestamps: true,
            tail_lines: Some(4),
            ..Default::default()
        };
        assert_eq!(
            read(&p, ts).await,
            "2026-12-06T16:00:02Z three\n2026-12-06T16:00:03Z four\n"
        );
        let limit = |n| Options {
            limit_bytes: Some(n),
            ..Default::default()
        };
        assert_eq!(read(&p, limit(6)).await, "one\ntw");
        assert_eq!(read(&p, limit(4)).await, "one\n");
        let first = Options {
            timestamps: true,
            limit_bytes: Some(1000),
            ..Default::default()
        };
        assert!(read(&p, first).await.starts_with(&format!("{T0} one\n")));
    }

    #[tokio::test]
    async fn tail_counts_an_unterminated_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, format!("{T0} stdout F a\n{T0} stdout F b")).unwrap();
        let mut f = File::open(&p).await.unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        let second = len - format!("{T0} stdout F b").len() as u64;
        assert_eq!(tail_offset(&mut f, 1).await.unwrap(), second);
        assert_eq!(tail_offset(&mut f, 2).await.unwrap(), 0);
        let empty = dir.path().join("1.log");
        std::fs::write(&empty, "").unwrap();
        let mut f = File::open(&empty).await.unwrap();
        assert_eq!(tail_offset(&mut f, 3).await.unwrap(), 0);
    }

    /// A large file's tail is found across read chunks.
    #[tokio::test]
    async fn tail_of_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let lines: Vec<String> = (0..20_000).map(|i| format!("{T0} stdout F {i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        write_log(&p, &refs);
        let opts = Options {
            tail_lines: Some(3),
            ..Default::default()
        };
        assert_eq!(read(&p, opts).await, "19997\n19998\n19999\n");
    }

    /// A follower sees lines appended later and goes on in the new file after a rotation;
    /// it ends once the container is gone and the file is drained.
    #[tokio::test]
    async fn follow_goes_through_rotation_and_ends_with_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        write_log(&p, &[&format!("{T0} stdout F before")]);
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(16);
        let src = Source {
            path: p.clone(),
            alive: {
                let a = alive.clone();
                move || a.load(std::sync::atomic::Ordering::SeqCst)
            },
        };
        let opts = Options {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(async move { copy(src, &opts, &tx).await });
        async fn next(rx: &mut mpsc::Receiver<Bytes>) -> Option<Bytes> {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a line in time")
        }
        assert_eq!(next(&mut rx).await.unwrap(), "before\n");
        write_log(&p, &[&format!("{T0} stdout F later")]);
        assert_eq!(next(&mut rx).await.unwrap(), "later\n");
        // Rotation: the last lines of the old file, then the new file from its start.
        write_log(&p, &[&format!("{T0} stdout F last-of-old")]);
        std::fs::rename(&p, dir.path().join("0.log.20261206-160000")).unwrap();
        write_log(&p, &[&format!("{T0} stdout F first-of-new")]);
        assert_eq!(next(&mut rx).await.unwrap(), "last-of-old\n");
        assert_eq!(next(&mut rx).await.unwrap(), "first-of-new\n");
        write_log(&p, &[&format!("{T0} stdout F at-exit")]);
        alive.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(next(&mut rx).await.unwrap(), "at-exit\n");
        assert!(next(&mut rx).await.is_none(), "the stream ends");
        task.await.unwrap().unwrap();
    }

    /// A follower whose client went away stops without waiting for the container.
    #[tokio::test]
    async fn follow_stops_when_the_client_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample(dir.path());
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let src = Source {
            path: p,
            alive: || true,
        };
        let opts = Options {
            follow: true,
            ..Default::default()
        };
        tokio::time::timeout(Duration::from_secs(5), copy(src, &opts, &tx))
            .await
            .expect("stops")
            .unwrap();
    }
}

#[cfg(test)]
mod throughput {
    use super::*;
    use std::io::Write;

    /// `cargo test -p skiff-agent --lib throughput -- --ignored --nocapture`: the reader's speed
    /// over a 100 MiB log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn read_100_mib() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        let line = format!(
            "2026-12-06T16:00:00.000000001Z stdout F {}\n",
            "x".repeat(69)
        );
        let n = (100 << 20) / line.len();
        for _ in 0..n {
            f.write_all(line.as_bytes()).unwrap();
        }
        drop(f);
        let (tx, mut rx) = mpsc::channel(16);
        let start = std::time::Instant::now();
        let src = Source {
            path: p,
            alive: || false,
        };
        let task = tokio::spawn(async move { copy(src, &Options::default(), &tx).await });
        let mut total = 0usize;
        while let Some(b) = rx.recv().await {
            total += b.len();
        }
        task.await.unwrap().unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{} MiB of messages from 100 MiB of log in {secs:.2} s: {:.0} MiB/s",
            total >> 20,
            100.0 / secs
        );
    }
}
