//! A WebSocket carried as a plain byte stream: each binary message is a run of bytes, as kubectl and
//! crictl tunnel SPDY port-forwarding through WebSocket (`SPDY/3.1+portforward.k8s.io`). This is
//! the reading side; the writing side frames its messages itself
//! ([`Socket::ws_tunnel`](super::sink::Socket::ws_tunnel)).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::PollSender;

use super::handler::Input;

/// The sub-protocol naming a SPDY port-forward session inside a WebSocket.
pub const SPDY_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// Byte-stream view of what a WebSocket client sends.
pub struct WsTunnel<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
    eof: bool,
}

impl<S> WsTunnel<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn io_err(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTunnel<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(_)) => {}
                Some(Err(WsError::ConnectionClosed)) => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
            }
        }
    }
}

/// The socket as tungstenite sees it when it only reads: what it writes itself (pongs, the reply
/// to a close, already framed) goes to the connection's writer as `wrap` makes it.
pub struct Control<T> {
    read: Input,
    tx: PollSender<T>,
    wrap: fn(Bytes) -> T,
}

impl<T: Send + 'static> Control<T> {
    pub fn new(read: Input, tx: mpsc::Sender<T>, wrap: fn(Bytes) -> T) -> Self {
        Self {
            read,
            tx: PollSender::new(tx),
            wrap,
        }
    }
}

fn writer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection's writer is gone")
}

impl<T: Send + 'static> AsyncRead for Control<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<T: Send + 'static> AsyncWrite for Control<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.tx.poll_reserve(cx)).map_err(|_| writer_gone())?;
        let msg = (this.wrap)(Bytes::copy_from_slice(buf));
        this.tx.send_item(msg).map_err(|_| writer_gone())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
