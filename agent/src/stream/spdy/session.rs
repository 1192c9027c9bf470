//! The server side of a SPDY/3.1 session over any byte stream: accepts client streams, answers them,
//! echoes PINGs, honours RST_STREAM/GOAWAY and keeps memory bounded.
//!
//! Flow control. Data the peer sends is buffered per stream up to `Config::stream_buffer` bytes; past
//! that the session stops reading the socket, so a fast sender is held back by TCP whether or not it
//! honours SPDY windows. WINDOW_UPDATEs are sent as the application consumes data. Our own sends obey
//! the peer's stream and session windows (64 KiB initial, SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_UPDATE)
//! once the peer shows it speaks flow control by sending one of those frames: the Go SPDY stack used
//! by kubectl, crictl and the kubelet never sends WINDOW_UPDATE, and would stall forever otherwise.
//! Frames to the peer go through a bounded queue, so a peer that stops reading stops our writers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::frame::{self, goaway, rst, setting, Frame, FrameError, FLAG_FIN, FLAG_UNIDIRECTIONAL};
use super::headers::{Decoder, Encoder, HeaderError, Headers};
use crate::stream::sink::{relay_pipe, splice_in, Pipe, Socket, PIPE_SIZE};

/// The window every SPDY/3 stream and session starts with.
pub const INITIAL_WINDOW: u32 = 64 * 1024;
const MAX_WINDOW: i64 = 0x7fff_ffff;

/// Limits of one session.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Largest inflated header block accepted.
    pub max_header_bytes: usize,
    /// Bytes of received data buffered per stream before the session stops reading the socket.
    pub stream_buffer: usize,
    /// Streams open at once; more are refused with REFUSED_STREAM.
    pub max_streams: usize,
    /// Largest DATA frame sent.
    pub max_data_frame: usize,
    /// Reset a stream whose sender overruns our receive window (FLOW_CONTROL_ERROR) instead of
    /// relying on TCP back-pressure alone.
    pub strict_receive_window: bool,
    /// Frames queued for the socket before writers wait.
    pub out_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame: frame::DEFAULT_MAX_FRAME,
            max_header_bytes: super::headers::DEFAULT_MAX_HEADER_BYTES,
            stream_buffer: 256 * 1024,
            max_streams: 128,
            max_data_frame: 32 * 1024,
            strict_receive_window: false,
            out_queue: 32,
        }
    }
}

/// Why a session ended other than by a clean close.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("SPDY session I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
}

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("SPDY stream {0} was reset")]
    Reset(u32),
    #[error("SPDY stream {0} is closed for sending")]
    Closed(u32),
    #[error("SPDY session is closed")]
    SessionClosed,
}

/// A stream the peer opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// New streams, in the order the peer opened them.
pub struct Incoming {
    rx: mpsc::Receiver<Stream>,
    shared: Arc<Shared>,
}

impl Incoming {
    /// Ends the session: frames already queued go out, then GOAWAY, then the socket is shut down.
    pub fn close(&self) {
        self.shared.shutdown.notify_one();
    }

    /// Cancelled once the client has given up: it sent GOAWAY or reset a stream, or the session
    /// ended (the connection closed). Exec and attach end their command then.
    pub fn client_gone(&self) -> CancellationToken {
        self.shared.client_gone.clone()
    }

    /// A handle that can end the session later.
    pub fn closer(&self) -> Closer {
        Closer(self.shared.clone())
    }

    /// The next stream; `None` once the session has ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}

/// Ends a session from elsewhere (see [`Incoming::close`]).
#[derive(Clone)]
pub struct Closer(Arc<Shared>);

impl Closer {
    pub fn close(&self) {
        self.0.shutdown.notify_one();
    }
}

struct Chunk {
    data: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

struct Entry {
    send_window: i64,
    recv_window: i64,
    unacked: u32,
    local_closed: bool,
    remote_closed: bool,
    reset: bool,
    data_tx: Option<mpsc::UnboundedSender<Chunk>>,
    buffer: Arc<Semaphore>,
}

struct State {
    streams: HashMap<u32, Entry>,
    initial_send: i64,
    session_send: i64,
    session_recv: i64,
    session_unacked: u32,
    enforce_send: bool,
    closed: bool,
}

enum Out {
    Frame(Frame),
    Reply(u32),
    /// A DATA frame of `len` bytes queued in `pipe`, spliced into the socket; `done` says when
    /// they are out.
    Splice {
        stream_id: u32,
        pipe: Arc<Pipe>,
        len: usize,
        done: oneshot::Sender<std::io::Result<()>>,
    },
    /// Answered once everything queued before it has been written.
    Written(oneshot::Sender<()>),
    Close,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
    shutdown: Notify,
    client_gone: CancellationToken,
    out: mpsc::Sender<Out>,
    cfg: Config,
    /// The session's socket takes [`Out::Splice`].
    splice: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update; the counters are still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, frame: Frame) -> Result<(), StreamError> {
        self.out
            .send(Out::Frame(frame))
            .await
            .map_err(|_| StreamError::SessionClosed)
    }
}

/// Starts serving a session on `io`. The handle resolves when the session ends.
pub fn serve<IO>(io: IO, cfg: Config) -> (Incoming, JoinHandle<Result<(), SessionError>>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    serve_split(read, Socket::stream(write), cfg)
}

/// Starts serving a session that reads from `read` and writes to `write`.
pub fn serve_split<R>(
    read: R,
    write: Socket,
    cfg: Config,
) -> (Incoming, JoinHandle<Result<(), SessionError>>)
where
    R: AsyncRead + Send + 'static,
{
    let splice = write.can_splice();
    let (out_tx, out_rx) = mpsc::channel(cfg.out_queue.max(1));
    let (in_tx, in_rx) = mpsc::channel(16);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            streams: HashMap::new(),
            initial_send: i64::from(INITIAL_WINDOW),
            session_send: i64::from(INITIAL_WINDOW),
            session_recv: i64::from(INITIAL_WINDOW),
            session_unacked: 0,
            enforce_send: false,
            closed: false,
        }),
        changed: Notify::new(),
        shutdown: Notify::new(),
        client_gone: CancellationToken::new(),
        out: out_tx,
        cfg,
        splice,
    });
    let writer = tokio::spawn(write_loop(write, out_rx));
    let reader = Reader {
        shared: shared.clone(),
        decoder: Decoder::new(shared.cfg.max_header_bytes),
        incoming: in_tx,
        last_id: 0,
        peer_gone: false,
    };
    let handle = tokio::spawn(reader.run(read, writer));
    let incoming = Incoming {
        rx: in_rx,
        shared: shared.clone(),
    };
    (incoming, handle)
}

/// Frames gathered into one write to the socket at most (about; the last frame may overshoot).
const WRITE_BATCH: usize = 256 * 1024;

/// DATA payloads at least this large are written from their own buffer rather than copied into
/// the batch.
const ZERO_COPY: usize = 4096;

async fn write_loop(mut sock: Socket, mut rx: mpsc::Receiver<Out>) -> Result<(), std::io::Error> {
    let mut encoder = Encoder::new();
    // Frames are encoded here; DATA payloads join the batch as the buffers they arrived in.
    let mut small = BytesMut::with_capacity(16 * 1024);
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let first = tokio::select! {
            out = rx.recv() => Ok(out),
            reply = sock.control() => Err(reply),
        };
        let first = match first {
            Ok(Some(out)) => out,
            Ok(None) => break,
            Err(reply) => {
                sock.write_framed(reply).await?;
                sock.flush().await?;
                continue;
            }
        };
        let mut next = Some(first);
        let mut close = false;
        let mut size = 0;
        let mut written = Vec::new();
        // Batch what is already queued into one write.
        while let Some(out) = next.take() {
            match out {
                Out::Frame(Frame::Data {
                    stream_id,
                    flags,
                    data,
                }) if data.len() >= ZERO_COPY => {
                    small.extend_from_slice(&frame::data_header(stream_id, flags, data.len()));
                    batch.push(small.split().freeze());
                    size += data.len();
                    batch.push(data);
                }
                Out::Frame(f) => f.encode(&mut small),
                Out::Reply(stream_id) => {
                    let header_block = encoder
                        .encode(&Headers::default())
                        .map_err(std::io::Error::other)?;
                    Frame::SynReply {
                        stream_id,
                        flags: 0,
                        header_block: header_block.into(),
                    }
                    .encode(&mut small);
                }
                Out::Splice {
                    stream_id,
                    pipe,
                    len,
                    done,
                } => {
                    // What was queued before goes first.
                    if !small.is_empty() {
                        batch.push(small.split().freeze());
                    }
                    sock.write_all(&mut batch).await?;
                    size = 0;
                    let header = frame::data_header(stream_id, 0, len);
                    let result = sock.splice(&header, &pipe, len).await;
                    let failed = result
                        .as_ref()
                        .err()
                        .map(|e| std::io::Error::new(e.kind(), e.to_string()));
                    let _ = done.send(result);
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
                Out::Written(w) => written.push(w),
                Out::Close => close = true,
            }
            if size + small.len() < WRITE_BATCH && !close {
                next = rx.try_recv().ok();
            }
        }
        if !small.is_empty() {
            batch.push(small.split().freeze());
        }
        sock.write_all(&mut batch).await?;
        // Transports that buffer (a WebSocket tunnel) must see every batch out.
        sock.flush().await?;
        written.drain(..).for_each(|w| {
            let _ = w.send(());
        });
        if close {
            break;
        }
    }
    sock.flush().await?;
    sock.shutdown().await
}

struct Reader {
    shared: Arc<Shared>,
    decoder: Decoder,
    incoming: mpsc::Sender<Stream>,
    last_id: u32,
    /// The peer sent GOAWAY: it opens no more streams, and any it tries are refused.
    peer_gone: bool,
}

impl Reader {
    async fn run<R: AsyncRead>(
        mut self,
        read: R,
        writer: JoinHandle<Result<(), std::io::Error>>,
    ) -> Result<(), SessionError> {
        tokio::pin!(read);
        let result = self.read_frames(&mut read).await;
        self.shared.client_gone.cancel();
        let status = match &result {
            Ok(()) => goaway::OK,
            Err(SessionError::Io(_)) => goaway::OK,
            Err(_) => goaway::PROTOCOL_ERROR,
        };
        if let Err(e) = &result {
            tracing::debug!(error = %e, "SPDY session ends");
        }
        self.close_all();
        let out = self.shared.out.clone();
        let last_good_stream_id = self.last_id;
        let finish = async move {
            let _ = out
                .send(Out::Frame(Frame::GoAway {
                    last_good_stream_id,
                    status,
                }))
                .await;
            let _ = out.send(Out::Close).await;
            drop(out);
            writer.await
        };
        // A peer that no longer reads must not keep the session alive.
        let _ = tokio::time::timeout(Duration::from_secs(5), finish).await;
        result
    }

    fn close_all(&self) {
        let mut st = self.shared.lock();
        st.closed = true;
        for e in st.streams.values_mut() {
            e.data_tx = None;
        }
        st.streams.clear();
        drop(st);
        self.shared.changed.notify_waiters();
    }

    async fn read_frames<R: AsyncRead + Unpin>(
        &mut self,
        read: &mut R,
    ) -> Result<(), SessionError> {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            while let Some((f, used)) = frame::parse(&buf, self.shared.cfg.max_frame)? {
                buf.advance(used);
                self.handle(f).await?;
            }
            let shared = self.shared.clone();
            tokio::select! {
                n = read.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                _ = shared.shutdown.notified() => return Ok(()),
            }
        }
    }

    async fn handle(&mut self, f: Frame) -> Result<(), SessionError> {
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => self.syn_stream(stream_id, flags, &header_block).await,
            Frame::SynReply {
                stream_id,
                header_block,
                ..
            } => {
                self.decoder.decode(&header_block)?;
                self.rst(stream_id, rst::PROTOCOL_ERROR).await
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                self.decoder.decode(&header_block)?;
                if flags & FLAG_FIN != 0 {
                    self.remote_fin(stream_id);
                }
                Ok(())
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => self.data(stream_id, flags, data).await,
            Frame::RstStream { stream_id, .. } => {
                self.forget(stream_id, true);
                self.shared.client_gone.cancel();
                Ok(())
            }
            Frame::Settings { entries, .. } => {
                for e in entries {
                    if e.id == setting::INITIAL_WINDOW_SIZE {
                        self.initial_window(e.value)?;
                    }
                }
                Ok(())
            }
            // Odd ids are the client's pings: echo them. Even ids would answer ours; we send none.
            Frame::Ping { id } if id % 2 == 1 => self.send(Frame::Ping { id }).await,
            Frame::GoAway { .. } => {
                self.peer_gone = true;
                self.shared.client_gone.cancel();
                Ok(())
            }
            Frame::Ping { .. } | Frame::Unknown { .. } => Ok(()),
            Frame::WindowUpdate { stream_id, delta } => self.window_update(stream_id, delta).await,
        }
    }

    async fn send(&self, f: Frame) -> Result<(), SessionError> {
        self.shared
            .send(f)
            .await
            .map_err(|_| SessionError::Protocol("session writer is gone".into()))
    }

    async fn rst(&self, stream_id: u32, status: u32) -> Result<(), SessionError> {
        self.send(Frame::RstStream { stream_id, status }).await
    }

    async fn syn_stream(&mut self, id: u32, flags: u8, block: &[u8]) -> Result<(), SessionError> {
        // The block must be inflated even for a refused stream: the zlib context spans the session.
        let headers = self.decoder.decode(block)?;
        if id % 2 == 0 || id <= self.last_id {
            return Err(SessionError::Protocol(format!(
                "stream id {id} is not a new client stream id (last {})",
                self.last_id
            )));
        }
        self.last_id = id;
        let (tx, rx) = mpsc::unbounded_channel();
        if self.peer_gone || !self.admit(id, flags, tx) {
            return self.rst(id, rst::REFUSED_STREAM).await;
        }
        self.shared
            .out
            .send(Out::Reply(id))
            .await
            .map_err(|_| SessionError::Protocol("session writer is gone".into()))?;
        let stream = Stream {
            id,
            headers,
            reader: StreamReader {
                id,
                rx,
                shared: self.shared.clone(),
            },
            writer: StreamWriter {
                id,
                shared: self.shared.clone(),
            },
        };
        if self.incoming.send(stream).await.is_err() {
            self.forget(id, true);
            return self.rst(id, rst::REFUSED_STREAM).await;
        }
        Ok(())
    }

    fn admit(&self, id: u32, flags: u8, tx: mpsc::UnboundedSender<Chunk>) -> bool {
        let mut st = self.shared.lock();
        if st.streams.len() >= self.shared.cfg.max_streams {
            return false;
        }
        let remote_closed = flags & FLAG_FIN != 0;
        let entry = Entry {
            send_window: st.initial_send,
            recv_window: i64::from(INITIAL_WINDOW),
            unacked: 0,
            local_closed: flags & FLAG_UNIDIRECTIONAL != 0,
            remote_closed,
            reset: false,
            data_tx: (!remote_closed).then_some(tx),
            buffer: Arc::new(Semaphore::new(self.shared.cfg.stream_buffer)),
        };
        st.streams.insert(id, entry);
        true
    }

    async fn data(&mut self, id: u32, flags: u8, data: Bytes) -> Result<(), SessionError> {
        let len = data.len() as i64;
        let (tx, buffer, overrun) = match self.account(id, data.len() as i64) {
            Ok(v) => v,
            Err(status) => return self.rst(id, status).await,
        };
        if overrun && self.shared.cfg.strict_receive_window {
            self.forget(id, true);
            return self.rst(id, rst::FLOW_CONTROL_ERROR).await;
        }
        if !data.is_empty() {
            if let Some(tx) = tx {
                let want = data.len().min(self.shared.cfg.stream_buffer).max(1) as u32;
                // Waiting here stops reading the socket: TCP back-pressure on a fast sender.
                let permit = buffer.acquire_many_owned(want).await.ok();
                if tx
                    .send(Chunk {
                        data,
                        _permit: permit,
                    })
                    .is_err()
                {
                    // Nobody reads this stream any more: the bytes count as consumed.
                    ack(&self.shared, id, len as u32).await;
                }
            } else {
                ack(&self.shared, id, len as u32).await;
            }
        }
        if flags & FLAG_FIN != 0 {
            self.remote_fin(id);
        }
        Ok(())
    }

    /// Charges `len` received bytes to the windows; the RST status when the stream cannot take them.
    #[allow(clippy::type_complexity)]
    fn account(
        &self,
        id: u32,
        len: i64,
    ) -> Result<(Option<mpsc::UnboundedSender<Chunk>>, Arc<Semaphore>, bool), u32> {
        let mut st = self.shared.lock();
        st.session_recv -= len;
        let session_overrun = st.session_recv < 0;
        let e = st.streams.get_mut(&id).ok_or(rst::INVALID_STREAM)?;
        if e.remote_closed {
            return Err(rst::STREAM_ALREADY_CLOSED);
        }
        e.recv_window -= len;
        let overrun = e.recv_window < 0 || session_overrun;
        Ok((e.data_tx.clone(), e.buffer.clone(), overrun))
    }

    fn remote_fin(&self, id: u32) {
        let mut st = self.shared.lock();
        if let Some(e) = st.streams.get_mut(&id) {
            e.remote_closed = true;
            e.data_tx = None;
            if e.local_closed {
                st.streams.remove(&id);
            }
        }
    }

    fn forget(&self, id: u32, reset: bool) {
        let mut st = self.shared.lock();
        if let Some(mut e) = st.streams.remove(&id) {
            e.reset = reset;
            e.data_tx = None;
        }
        drop(st);
        self.shared.changed.notify_waiters();
    }

    fn initial_window(&self, value: u32) -> Result<(), SessionError> {
        let value = i64::from(value);
        if value > MAX_WINDOW {
            return Err(SessionError::Protocol(format!(
                "SETTINGS_INITIAL_WINDOW_SIZE {value} exceeds 2^31-1"
            )));
        }
        let mut st = self.shared.lock();
        let delta = value - st.initial_send;
        st.initial_send = value;
        st.enforce_send = true;
        for e in st.streams.values_mut() {
            e.send_window += delta;
        }
        drop(st);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn window_update(&self, id: u32, delta: u32) -> Result<(), SessionError> {
        let overflow = self.credit(id, delta)?;
        self.shared.changed.notify_waiters();
        if overflow {
            self.forget(id, true);
            return self.rst(id, rst::FLOW_CONTROL_ERROR).await;
        }
        Ok(())
    }
}

impl Reader {
    fn credit(&self, id: u32, delta: u32) -> Result<bool, SessionError> {
        let mut st = self.shared.lock();
        st.enforce_send = true;
        if id == 0 {
            st.session_send += i64::from(delta);
            if st.session_send > MAX_WINDOW {
                return Err(SessionError::Protocol("session window overflow".into()));
            }
            return Ok(false);
        }
        Ok(st.streams.get_mut(&id).is_some_and(|e| {
            e.send_window += i64::from(delta);
            e.send_window > MAX_WINDOW
        }))
    }
}

/// Credits `n` consumed bytes back to the peer, in WINDOW_UPDATEs of at least half a window.
async fn ack(shared: &Shared, id: u32, n: u32) {
    let threshold = INITIAL_WINDOW / 2;
    let mut frames = Vec::new();
    {
        let mut st = shared.lock();
        st.session_unacked += n;
        if st.session_unacked >= threshold {
            frames.push(Frame::WindowUpdate {
                stream_id: 0,
                delta: st.session_unacked,
            });
            st.session_recv += i64::from(st.session_unacked);
            st.session_unacked = 0;
        }
        if let Some(e) = st.streams.get_mut(&id) {
            e.unacked += n;
            if e.unacked >= threshold && !e.remote_closed {
                frames.push(Frame::WindowUpdate {
                    stream_id: id,
                    delta: e.unacked,
                });
                e.recv_window += i64::from(e.unacked);
                e.unacked = 0;
            }
        }
    }
    for f in frames {
        if shared.send(f).await.is_err() {
            return;
        }
    }
}

/// The receiving half of a stream.
pub struct StreamReader {
    id: u32,
    rx: mpsc::UnboundedReceiver<Chunk>,
    shared: Arc<Shared>,
}

impl StreamReader {
    /// The next chunk the peer sent; `None` at the peer's FIN, a reset or the session's end.
    pub async fn read(&mut self) -> Option<Bytes> {
        let chunk = self.rx.recv().await?;
        ack(&self.shared, self.id, chunk.data.len() as u32).await;
        Some(chunk.data)
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

/// The sending half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
}

impl StreamWriter {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends all of `data`, waiting for window and queue space as needed.
    pub async fn write(&self, mut data: &[u8]) -> Result<(), StreamError> {
        while !data.is_empty() {
            let n = self
                .reserve(data.len(), self.shared.cfg.max_data_frame)
                .await?;
            let chunk = Bytes::copy_from_slice(&data[..n]);
            data = &data[n..];
            self.shared
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: chunk,
                })
                .await?;
        }
        Ok(())
    }

    /// Copies what `pipe` yields into the stream until the pipe's end (the stream stays open). Each
    /// read takes as much as the pipe holds (up to its capacity) and goes out as DATA frames of
    /// that buffer, as the windows allow; the next read waits until they are written. Reads then
    /// grow as large as the pipe while a write is under way, the per-frame costs vanish against
    /// the bytes, the one buffer is reused, and a client that stops reading holds at most a pipe's
    /// worth here.
    pub async fn copy_pipe(&self, pipe: Pipe) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        while pipe.read_buf(&mut buf, PIPE_SIZE).await? > 0 {
            self.send_payload(buf.split().freeze()).await?;
            self.written().await?;
        }
        Ok(())
    }

    /// Waits until everything queued so far has been written to the socket.
    async fn written(&self) -> std::io::Result<()> {
        let (done, out) = oneshot::channel();
        let closed = || std::io::Error::other(StreamError::SessionClosed);
        self.shared
            .out
            .send(Out::Written(done))
            .await
            .map_err(|_| closed())?;
        out.await.map_err(|_| closed())
    }

    /// Copies what `tcp` receives into the stream until the peer's end of data (the stream stays
    /// open): on plain TCP through a pipe, spliced in and out (the bytes never enter skiffd), else
    /// read into buffers that become DATA payloads.
    pub async fn copy_socket(&self, tcp: OwnedReadHalf) -> std::io::Result<()> {
        if !self.shared.splice {
            let mut tcp = tcp;
            let mut buf = BytesMut::new();
            let max = self.shared.cfg.max_data_frame;
            loop {
                // Frames in memory stay as small as the session's own, so that the out queue
                // bounds what a client that stops reading makes us hold.
                buf.reserve(max);
                if tcp.read_buf(&mut (&mut buf).limit(max)).await? == 0 {
                    return Ok(());
                }
                self.send_payload(buf.split().freeze()).await?;
            }
        }
        let (pipe, pipe_in) = relay_pipe()?;
        let pipe = Arc::new(pipe);
        loop {
            let mut queued = splice_in(tcp.as_ref(), &pipe_in).await?;
            if queued == 0 {
                return Ok(());
            }
            while queued > 0 {
                queued -= self.splice(&pipe, queued).await?;
            }
        }
    }

    /// Sends up to `queued` bytes of `pipe` as one DATA frame spliced into the socket, as the
    /// windows allow; how many.
    async fn splice(&self, pipe: &Arc<Pipe>, queued: usize) -> std::io::Result<usize> {
        let len = self
            .reserve(queued, PIPE_SIZE)
            .await
            .map_err(std::io::Error::other)?;
        let (done, out) = oneshot::channel();
        let splice = Out::Splice {
            stream_id: self.id,
            pipe: pipe.clone(),
            len,
            done,
        };
        if self.shared.out.send(splice).await.is_err() {
            return Err(std::io::Error::other(StreamError::SessionClosed));
        }
        out.await
            .map_err(|_| std::io::Error::other(StreamError::SessionClosed))??;
        Ok(len)
    }

    /// Sends `data` as DATA frames of its own buffer, as the windows allow.
    async fn send_payload(&self, mut data: Bytes) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = self
                .reserve(data.len(), PIPE_SIZE)
                .await
                .map_err(std::io::Error::other)?;
            self.shared
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: data.split_to(n),
                })
                .await
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Takes up to `want` bytes (at most `max`) of the windows for one DATA frame.
    async fn reserve(&self, want: usize, max: usize) -> Result<usize, StreamError> {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if st.closed {
                    return Err(StreamError::SessionClosed);
                }
                let enforce = st.enforce_send;
                let session = st.session_send;
                let e = st
                    .streams
                    .get_mut(&self.id)
                    .ok_or(StreamError::Reset(self.id))?;
                if e.reset {
                    return Err(StreamError::Reset(self.id));
                }
                if e.local_closed {
                    return Err(StreamError::Closed(self.id));
                }
                let mut n = want.min(max) as i64;
                if enforce {
                    n = n.min(e.send_window).min(session);
                }
                if n > 0 {
                    e.send_window -= n;
                    st.session_send -= n;
                    return Ok(n as usize);
                }
            }
            notified.await;
        }
    }

    /// Half-closes the stream (an empty DATA frame with FIN).
    pub async fn close(&self) -> Result<(), StreamError> {
        {
            let mut st = self.shared.lock();
            let Some(e) = st.streams.get_mut(&self.id) else {
                return Ok(());
            };
            if e.local_closed {
                return Ok(());
            }
            e.local_closed = true;
            if e.remote_closed {
                st.streams.remove(&self.id);
            }
        }
        self.shared
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await
    }

    /// Abandons the stream with RST_STREAM `status`.
    pub async fn reset(&self, status: u32) -> Result<(), StreamError> {
        let known = {
            let mut st = self.shared.lock();
            st.streams.remove(&self.id).is_some()
        };
        self.shared.changed.notify_waiters();
        if known {
            self.shared
                .send(Frame::RstStream {
                    stream_id: self.id,
                    status,
                })
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncWriteExt, DuplexStream};

    /// A bare client: frames and header blocks by hand.
    struct Client {
        io: DuplexStream,
        buf: BytesMut,
        enc: Encoder,
        dec: Decoder,
    }

    impl Client {
        fn new(io: DuplexStream) -> Self {
            Self {
                io,
                buf: BytesMut::new(),
                enc: Encoder::new(),
                dec: Decoder::new(1 << 16),
            }
        }

        async fn send(&mut self, f: Frame) {
            self.io.write_all(&f.to_bytes()).await.unwrap();
        }

        async fn open(&mut self, id: u32, h: Headers, flags: u8) {
            let header_block = self.enc.encode(&h).unwrap().into();
            self.send(Frame::SynStream {
                stream_id: id,
                associated_id: 0,
                priority: 0,
                slot: 0,
                flags,
                header_block,
            })
            .await;
        }

        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some((f, n)) = frame::parse(&self.buf, 1 << 20).unwrap() {
                    self.buf.advance(n);
                    if let Frame::SynReply { header_block, .. } = &f {
                        self.dec.decode(header_block).unwrap();
                    }
                    return Some(f);
                }
                let read =
                    tokio::time::timeout(Duration::from_secs(5), self.io.read_buf(&mut self.buf))
                        .await
                        .expect("frame within 5 s")
                        .unwrap();
                if read == 0 {
                    return None;
                }
            }
        }

        /// The next frame that is not a WINDOW_UPDATE.
        async fn next_non_window(&mut self) -> Option<Frame> {
            loop {
                match self.next().await? {
                    Frame::WindowUpdate { .. } => continue,
                    f => return Some(f),
                }
            }
        }
    }

    fn pair(cfg: Config) -> (Client, Incoming, JoinHandle<Result<(), SessionError>>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (incoming, handle) = serve(b, cfg);
        (Client::new(a), incoming, handle)
    }

    #[tokio::test]
    async fn stream_round_trip_and_ping() {
        let (mut c, mut incoming, handle) = pair(Config::default());
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 1 }));
        c.open(1, Headers::default().with("streamtype", "stdin"), 0)
            .await;
        let mut s = incoming.accept().await.unwrap();
        assert_eq!(s.headers.get("streamtype"), Some("stdin"));
        assert!(matches!(
            c.next().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        c.send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        })
        .await;
        assert_eq!(s.reader.read().await.as_deref(), Some(&b"hello"[..]));
        assert_eq!(s.reader.read().await, None);
        s.writer.write(b"back").await.unwrap();
        s.writer.close().await.unwrap();
        assert_eq!(
            c.next_non_window().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"back")
            })
        );
        assert!(matches!(
            c.next_non_window().await,
            Some(Frame::Data {
                flags: FLAG_FIN,
                ..
            })
        ));
        drop(c);
        assert!(handle.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn unknown_stream_is_reset_and_session_lives() {
        let (mut c, _incoming, _handle) = pair(Config::default());
        c.send(Frame::Data {
            stream_id: 41,
            flags: 0,
            data: Bytes::from_static(b"x"),
        })
        .await;
        assert_eq!(
            c.next().await,
            Some(Frame::RstStream {
                stream_id: 41,
                status: rst::INVALID_STREAM
            })
        );
        c.send(Frame::WindowUpdate {
            stream_id: 77,
            delta: 5,
        })
        .await;
        c.send(Frame::Ping { id: 3 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 3 }));
    }

    #[tokio::test]
    async fn malformed_frame_ends_session_with_goaway() {
        let (mut c, _incoming, handle) = pair(Config::default());
        c.io.write_all(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
            .await
            .unwrap();
        assert_eq!(
            c.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: 0,
                status: goaway::PROTOCOL_ERROR
            })
        );
        assert_eq!(c.next().await, None);
        assert!(matches!(
            handle.await.unwrap(),
            Err(SessionError::Frame(FrameError::BadVersion(2)))
        ));
    }

    #[tokio::test]
    async fn oversized_header_block_ends_session() {
        let cfg = Config {
            max_header_bytes: 4096,
            ..Config::default()
        };
        let (mut c, _incoming, handle) = pair(cfg);
        c.open(1, Headers::default().with("x", &"y".repeat(50_000)), 0)
            .await;
        assert!(matches!(
            c.next().await,
            Some(Frame::GoAway {
                status: goaway::PROTOCOL_ERROR,
                ..
            })
        ));
        assert!(matches!(
            handle.await.unwrap(),
            Err(SessionError::Header(HeaderError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn sends_respect_the_peer_window() {
        let (mut c, mut incoming, _handle) = pair(Config::default());
        c.send(Frame::Settings {
            flags: 0,
            entries: vec![frame::Setting {
                flags: 0,
                id: setting::INITIAL_WINDOW_SIZE,
                value: 1000,
            }],
        })
        .await;
        c.open(1, Headers::default(), FLAG_FIN).await;
        let s = incoming.accept().await.unwrap();
        let writer = s.writer.clone();
        let task = tokio::spawn(async move { writer.write(&[7u8; 5000]).await });
        assert!(matches!(c.next().await, Some(Frame::SynReply { .. })));
        let mut got = 0;
        while got < 1000 {
            match c.next().await {
                Some(Frame::Data { data, .. }) => got += data.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, 1000);
        // Nothing more until the window opens.
        let more = tokio::time::timeout(Duration::from_millis(300), c.next()).await;
        assert!(more.is_err(), "sent past the window: {more:?}");
        c.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 4000,
        })
        .await;
        while got < 5000 {
            match c.next().await {
                Some(Frame::Data { data, .. }) => got += data.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn non_reading_peer_holds_writers_back() {
        let (mut c, mut incoming, _handle) = pair(Config::default());
        c.open(1, Headers::default(), FLAG_FIN).await;
        let s = incoming.accept().await.unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let writer = s.writer.clone();
        let task = tokio::spawn(async move {
            let chunk = vec![1u8; 16 * 1024];
            for _ in 0..(64 * 1024 * 1024 / chunk.len()) {
                if writer.write(&chunk).await.is_err() {
                    break;
                }
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = sent.load(Ordering::SeqCst);
        // Socket buffer (64 KiB) + out queue (32 frames of 32 KiB) + one batch: a few MiB at most.
        assert!(
            held < 4 * 1024 * 1024,
            "{held} bytes accepted from a peer that reads nothing"
        );
        assert!(!task.is_finished());
        // Once the peer reads, everything flows.
        let mut total = 0;
        while total < 64 * 1024 * 1024 {
            match c.next().await {
                Some(Frame::Data { data, .. }) => total += data.len(),
                Some(_) => {}
                None => break,
            }
        }
        assert_eq!(total, 64 * 1024 * 1024);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn fast_sender_is_held_back_by_the_stream_buffer() {
        let cfg = Config {
            stream_buffer: 64 * 1024,
            ..Config::default()
        };
        let (mut c, mut incoming, _handle) = pair(cfg);
        c.open(1, Headers::default(), 0).await;
        let mut s = incoming.accept().await.unwrap();
        // The client ignores windows (as the Go SPDY stack does) and pushes 8 MiB nobody reads yet.
        let (mut rd, mut wr) = tokio::io::split(c.io);
        let pusher = tokio::spawn(async move {
            let chunk = Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from(vec![2u8; 32 * 1024]),
            }
            .to_bytes();
            for _ in 0..256 {
                wr.write_all(&chunk).await.unwrap();
            }
            wr
        });
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            while rd.read(&mut sink).await.unwrap_or(0) > 0 {}
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pusher.is_finished(), "8 MiB buffered without a reader");
        let mut total = 0;
        while total < 8 * 1024 * 1024 {
            total += s.reader.read().await.unwrap().len();
        }
        pusher.await.unwrap();
        drain.abort();
    }

    #[tokio::test]
    async fn random_input_never_panics() {
        let mut x: u32 = 0x9e37_79b9;
        for round in 0..200 {
            let (mut c, _incoming, handle) = pair(Config::default());
            let mut bytes = Vec::new();
            if round % 2 == 0 {
                // Start with a valid stream so later garbage reaches the stateful paths.
                let block = Encoder::new().encode(&Headers::default()).unwrap();
                bytes.extend_from_slice(
                    &Frame::SynStream {
                        stream_id: 1,
                        associated_id: 0,
                        priority: 0,
                        slot: 0,
                        flags: 0,
                        header_block: block.into(),
                    }
                    .to_bytes(),
                );
            }
            for _ in 0..256 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                bytes.push(x as u8);
            }
            let _ = c.io.write_all(&bytes).await;
            drop(c);
            let _ = tokio::time::timeout(Duration::from_secs(10), handle)
                .await
                .expect("session ends")
                .expect("no panic");
        }
    }
}
