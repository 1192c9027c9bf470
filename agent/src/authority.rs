//! Accepting any HTTP/2 `:authority` a CRI client sends over the unix socket.
//!
//! grpc-go as the kubelet 1.28 uses it, and Python's grpcio, send the socket path (`/run/skiff/skiff.sock`)
//! as the `:authority` of every request. That is not a valid URI authority, and the h2 server under tonic
//! resets such a stream (RST_STREAM PROTOCOL_ERROR) while it decodes the HEADERS frame, before any request
//! reaches hyper or tonic: there is no hook above h2 where the value could be fixed, and no h2 setting to relax
//! the check. Over a unix socket the authority names nothing, so [`AuthorityFix`] wraps each accepted
//! connection and rewrites the client's header blocks on their way to h2: it decodes every HEADERS block
//! (with its CONTINUATIONs) with its own HPACK decoder, replaces an `:authority` that h2 would refuse with
//! `localhost`, and re-encodes the block with literal fields only. Every other frame passes through as it came.
//!
//! Why whole blocks are re-encoded rather than the one field patched in place: the client's HPACK encoder may
//! put the authority in its dynamic table and later refer to it by index, Huffman-code it, or split the block
//! over CONTINUATION frames. Re-encoding without indexing keeps h2's dynamic table empty, so h2's decoder never
//! needs to agree with the client's table — only this decoder follows it — whatever representation the client
//! chooses. The cost is a few bytes more per request on a local socket.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may advertise: re-encoded frames never exceed it.
const MAX_FRAME: usize = 16_384;
/// h2's default SETTINGS_HEADER_TABLE_SIZE, the most a client's encoder may use.
const TABLE_SIZE: usize = 4_096;
/// Refuse header blocks beyond this (h2's own header list limit is far below it).
const MAX_BLOCK: usize = 1 << 20;
/// What an authority h2 refuses becomes.
const STAND_IN: &[u8] = b"localhost";

/// Why a connection's byte stream could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("HTTP/2 header block: {0}")]
    Hpack(loona_hpack::decoder::DecoderError),
    #[error("HTTP/2 header block over {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("HTTP/2 HEADERS frame: padding longer than the frame")]
    BadPadding,
    #[error("HTTP/2 header block of stream {0} interrupted by a frame of type {1:#x}")]
    Interrupted(u32, u8),
}

/// An accepted connection whose client → server header blocks go through a [`Rewriter`].
pub struct AuthorityFix<T> {
    inner: T,
    raw: BytesMut,
    out: BytesMut,
    rewriter: Rewriter,
    eof: bool,
}

impl<T> AuthorityFix<T> {
    pub fn new(inner: T) -> AuthorityFix<T> {
        AuthorityFix {
            inner,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            rewriter: Rewriter::new(),
            eof: false,
        }
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<T>
{
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // A frame cut short stays cut short: h2 sees the same truncated stream the client sent.
                this.eof = true;
                this.out.extend_from_slice(&this.raw.split());
                continue;
            }
            this.raw.extend_from_slice(read.filled());
            if let Err(e) = this.rewriter.feed(&mut this.raw, &mut this.out) {
                tracing::warn!(error = %e, "closing a CRI connection");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

enum Stage {
    /// Waiting for the client connection preface.
    Preface,
    /// Waiting for the next frame header.
    Frame,
    /// Copying this many more payload bytes of a frame that passes untouched.
    Pass(usize),
    /// Not an HTTP/2 client: everything passes untouched for h2 to refuse.
    Verbatim,
}

/// A header block being gathered from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client → server half of an HTTP/2 connection, frame by frame.
pub struct Rewriter {
    stage: Stage,
    open: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl Default for Rewriter {
    fn default() -> Rewriter {
        Rewriter::new()
    }
}

impl Rewriter {
    pub fn new() -> Rewriter {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Rewriter {
            stage: Stage::Preface,
            open: None,
            decoder,
        }
    }

    /// Moves what can be passed on from `input` to `out`; an incomplete frame stays in `input`.
    pub fn feed(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<(), RewriteError> {
        loop {
            match self.stage {
                Stage::Verbatim => {
                    out.extend_from_slice(&input.split());
                    return Ok(());
                }
                Stage::Preface => {
                    let n = input.len().min(PREFACE.len());
                    if input[..n] != PREFACE[..n] {
                        self.stage = Stage::Verbatim;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    out.extend_from_slice(&input.split_to(n));
                    self.stage = Stage::Frame;
                }
                Stage::Pass(0) => self.stage = Stage::Frame,
                Stage::Pass(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input.split_to(n));
                    self.stage = Stage::Pass(left - n);
                    if n < left {
                        return Ok(());
                    }
                }
                Stage::Frame => {
                    if !self.frame(input, out)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Handles the frame at the start of `input`; false when more bytes are needed.
    fn frame(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<bool, RewriteError> {
        if input.len() < FRAME_HEAD {
            return Ok(false);
        }
        let len = u32::from_be_bytes([0, input[0], input[1], input[2]]) as usize;
        let (kind, flags) = (input[3], input[4]);
        let stream = u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
        let in_block = kind == HEADERS || (kind == CONTINUATION && self.open.is_some());
        if let Some(open) = &self.open {
            if kind != CONTINUATION || stream != open.stream {
                return Err(RewriteError::Interrupted(open.stream, kind));
            }
        }
        if !in_block {
            out.extend_from_slice(&input.split_to(FRAME_HEAD));
            self.stage = Stage::Pass(len);
            return Ok(true);
        }
        let gathered = self.open.as_ref().map_or(0, |b| b.fragment.len());
        if gathered + len > MAX_BLOCK {
            return Err(RewriteError::BlockTooLarge);
        }
        if input.len() < FRAME_HEAD + len {
            return Ok(false);
        }
        input.advance(FRAME_HEAD);
        let payload = input.split_to(len);
        if kind == HEADERS {
            self.open = Some(headers_frame(stream, flags, &payload)?);
        } else if let Some(open) = &mut self.open {
            open.fragment.extend_from_slice(&payload);
        }
        if flags & END_HEADERS != 0 {
            let block = self.open.take().expect("a header block is open");
            self.emit(block, out)?;
        }
        Ok(true)
    }

    fn emit(&mut self, block: Block, out: &mut BytesMut) -> Result<(), RewriteError> {
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value = if &*name == b":authority" && !acceptable(&value) {
                    STAND_IN
                } else {
                    &value
                };
                literal(&name, value, &mut encoded);
            })
            .map_err(RewriteError::Hpack)?;
        write_frames(&block, &encoded, out);
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame, without its padding and priority fields.
fn headers_frame(stream: u32, flags: u8, payload: &[u8]) -> Result<Block, RewriteError> {
    let mut body = payload;
    if flags & PADDED != 0 {
        let (&pad, rest) = body.split_first().ok_or(RewriteError::BadPadding)?;
        let keep = rest
            .len()
            .checked_sub(pad as usize)
            .ok_or(RewriteError::BadPadding)?;
        body = &rest[..keep];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields: [u8; 5] = body
            .get(..5)
            .and_then(|p| p.try_into().ok())
            .ok_or(RewriteError::BadPadding)?;
        priority = Some(fields);
        body = &body[5..];
    }
    Ok(Block {
        stream,
        flags,
        priority,
        fragment: body.to_vec(),
    })
}

/// Whether h2 takes `value` as an `:authority`.
fn acceptable(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// One field as an HPACK literal without indexing, with a literal name and no Huffman coding.
fn literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0);
    for s in [name, value] {
        // Writing into a Vec cannot fail.
        let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// `encoded` as a HEADERS frame (keeping END_STREAM and priority) and as many CONTINUATIONs as it needs.
fn write_frames(block: &Block, encoded: &[u8], out: &mut BytesMut) {
    let first_room = MAX_FRAME - block.priority.map_or(0, |p| p.len());
    let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
    let mut flags = block.flags & END_STREAM;
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let prio = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
    frame_head(prio.len() + first.len(), HEADERS, flags, block.stream, out);
    out.extend_from_slice(prio);
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        frame_head(chunk.len(), CONTINUATION, flags, block.stream, out);
        out.extend_from_slice(chunk);
        rest = tail;
    }
}

fn frame_head(len: usize, kind: u8, flags: u8, stream: u32, out: &mut BytesMut) {
    out.put_slice(&(len as u32).to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame_head(block.len(), HEADERS, flags, stream, &mut out);
        out.extend_from_slice(block);
        out.to_vec()
    }

    fn run(input: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut r = Rewriter::new();
        let mut out = BytesMut::new();
        // One byte at a time: every frame boundary case is a partial read.
        let mut pending = BytesMut::new();
        for b in input {
            pending.put_u8(*b);
            r.feed(&mut pending, &mut out)?;
        }
        Ok(out.to_vec())
    }

    fn decoded_authorities(out: &[u8]) -> Vec<Vec<u8>> {
        let mut d = loona_hpack::Decoder::new();
        let mut found = Vec::new();
        let mut at = PREFACE.len();
        while at + FRAME_HEAD <= out.len() {
            let len = u32::from_be_bytes([0, out[at], out[at + 1], out[at + 2]]) as usize;
            let body = &out[at + FRAME_HEAD..at + FRAME_HEAD + len];
            if out[at + 3] == HEADERS {
                for (n, v) in d.decode(body).unwrap() {
                    if n == b":authority" {
                        found.push(v);
                    }
                }
            }
            at += FRAME_HEAD + len;
        }
        found
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_even_when_indexed_later() {
        // `:method POST` from the static table, then the path added to the dynamic table (0x41: literal with
        // incremental indexing, name `:authority`), then the same field by its dynamic index 62.
        let path = b"/run/skiff/skiff.sock";
        let mut first = vec![0x83, 0x41, path.len() as u8];
        first.extend_from_slice(path);
        let second = [0x83, 0x80 | 62];
        let mut input = PREFACE.to_vec();
        input.extend(headers(1, END_HEADERS | END_STREAM, &first));
        input.extend(headers(3, END_HEADERS, &second));
        let out = run(&input).unwrap();
        assert_eq!(
            decoded_authorities(&out),
            vec![b"localhost".to_vec(), b"localhost".to_vec()]
        );
    }

    #[test]
    fn a_valid_authority_and_other_frames_pass_unchanged() {
        let block =
            loona_hpack::Encoder::new().encode([(&b":authority"[..], &b"localhost:80"[..])]);
        let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut input = PREFACE.to_vec();
        input.extend(ping);
        input.extend(headers(1, END_HEADERS, &block));
        let out = run(&input).unwrap();
        assert_eq!(&out[PREFACE.len()..PREFACE.len() + ping.len()], &ping);
        assert_eq!(decoded_authorities(&out), vec![b"localhost:80".to_vec()]);
    }

    #[test]
    fn a_block_split_over_continuations_is_joined() {
        let block = loona_hpack::Encoder::new().encode([(&b":authority"[..], &b"unix:/x"[..])]);
        let (a, b) = block.split_at(3);
        let mut input = PREFACE.to_vec();
        input.extend(headers(5, 0, a));
        let mut cont = BytesMut::new();
        frame_head(b.len(), CONTINUATION, END_HEADERS, 5, &mut cont);
        cont.extend_from_slice(b);
        input.extend(cont);
        assert_eq!(
            decoded_authorities(&run(&input).unwrap()),
            vec![b"localhost".to_vec()]
        );
    }

    #[test]
    fn an_interrupted_block_and_garbage_hpack_are_errors() {
        let mut input = PREFACE.to_vec();
        input.extend(headers(1, 0, &[0x82]));
        input.extend(headers(3, END_HEADERS, &[0x82]));
        assert!(matches!(
            run(&input),
            Err(RewriteError::Interrupted(1, HEADERS))
        ));
        let mut input = PREFACE.to_vec();
        input.extend(headers(
            1,
            END_HEADERS,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        assert!(matches!(run(&input), Err(RewriteError::Hpack(_))));
    }

    #[test]
    fn a_client_without_the_preface_passes_verbatim() {
        let input = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(run(input).unwrap(), input.to_vec());
    }
}
