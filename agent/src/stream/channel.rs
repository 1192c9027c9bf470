//! The Kubernetes sub-protocols carried by the streaming transports: remotecommand
//! (`v4.channel.k8s.io`, `v5.channel.k8s.io`: stdin, stdout, stderr, error, resize) and
//! `portforward.k8s.io` (data/error stream pairs per request id).
//!
//! Over SPDY every channel is its own stream, named by the `streamtype` header. Over WebSocket every
//! message starts with a channel byte; v5 adds channel 255, which half-closes the channel named by the
//! next byte (stdin EOF).

use serde::{Deserialize, Serialize};

use super::spdy::headers::Headers;

pub const V4: &str = "v4.channel.k8s.io";
pub const V5: &str = "v5.channel.k8s.io";
/// Older SPDY remote-command versions: v3 adds resize to v2; both report failures as plain text.
pub const V3: &str = "v3.channel.k8s.io";
pub const V2: &str = "v2.channel.k8s.io";
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// Remote-command protocols offered over SPDY, most preferred first (v5's stdin close is WebSocket-only).
pub const SPDY_PROTOCOLS: &[&str] = &[V4, V3, V2];
/// Remote-command protocols offered over WebSocket, most preferred first.
pub const WEBSOCKET_PROTOCOLS: &[&str] = &[V5, V4];

/// Header naming a SPDY stream's channel.
pub const STREAM_TYPE_HEADER: &str = "streamtype";
/// Port-forward headers.
pub const PORT_HEADER: &str = "port";
pub const REQUEST_ID_HEADER: &str = "requestid";

/// Why a channel-level message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("stream header {STREAM_TYPE_HEADER} is missing")]
    MissingStreamType,
    #[error("stream type {0:?} is not known")]
    UnknownStreamType(String),
    #[error("WebSocket message has no channel byte")]
    EmptyMessage,
    #[error("WebSocket channel {0} is not known")]
    UnknownChannel(u8),
    #[error("resize message {0:?} is not {{\"Width\":N,\"Height\":N}}")]
    BadResize(String),
    #[error("port-forward header {0} is missing")]
    MissingHeader(&'static str),
    #[error("port-forward port {0:?} is not a port number 1-65535")]
    BadPort(String),
}

/// A remote-command channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Stdin,
    Stdout,
    Stderr,
    Error,
    Resize,
}

impl Channel {
    /// The WebSocket channel byte.
    pub fn id(self) -> u8 {
        match self {
            Channel::Stdin => 0,
            Channel::Stdout => 1,
            Channel::Stderr => 2,
            Channel::Error => 3,
            Channel::Resize => 4,
        }
    }

    pub fn from_id(id: u8) -> Result<Self, ChannelError> {
        Ok(match id {
            0 => Channel::Stdin,
            1 => Channel::Stdout,
            2 => Channel::Stderr,
            3 => Channel::Error,
            4 => Channel::Resize,
            other => return Err(ChannelError::UnknownChannel(other)),
        })
    }

    /// The SPDY `streamtype` value.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Stdin => "stdin",
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
            Channel::Error => "error",
            Channel::Resize => "resize",
        }
    }

    /// The channel of a SPDY stream, from its headers.
    pub fn from_headers(h: &Headers) -> Result<Self, ChannelError> {
        let kind = h
            .get(STREAM_TYPE_HEADER)
            .ok_or(ChannelError::MissingStreamType)?;
        Ok(match kind {
            "stdin" => Channel::Stdin,
            "stdout" => Channel::Stdout,
            "stderr" => Channel::Stderr,
            "error" => Channel::Error,
            "resize" => Channel::Resize,
            other => return Err(ChannelError::UnknownStreamType(other.to_string())),
        })
    }
}

/// v5's close signal channel byte.
pub const CLOSE_CHANNEL: u8 = 255;

/// A decoded WebSocket binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage<'a> {
    Data(Channel, &'a [u8]),
    /// v5: the peer will send nothing more on this channel.
    Close(Channel),
}

impl<'a> WsMessage<'a> {
    pub fn decode(msg: &'a [u8], v5: bool) -> Result<Self, ChannelError> {
        let (&first, rest) = msg.split_first().ok_or(ChannelError::EmptyMessage)?;
        if first == CLOSE_CHANNEL && v5 {
            let &target = rest.first().ok_or(ChannelError::EmptyMessage)?;
            return Ok(WsMessage::Close(Channel::from_id(target)?));
        }
        Ok(WsMessage::Data(Channel::from_id(first)?, rest))
    }
}

/// The wire form of `data` on `channel`.
pub fn ws_frame(channel: Channel, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel.id());
    out.extend_from_slice(data);
    out
}

/// The v5 close message for `channel`.
pub fn ws_close(channel: Channel) -> Vec<u8> {
    vec![CLOSE_CHANNEL, channel.id()]
}

/// A terminal size change, as clients send it on the resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

impl Resize {
    pub fn parse(json: &[u8]) -> Result<Self, ChannelError> {
        serde_json::from_slice(json)
            .map_err(|_| ChannelError::BadResize(String::from_utf8_lossy(json).into_owned()))
    }
}

/// Splits a resize stream (concatenated JSON objects, possibly split across reads) into sizes.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    /// Feeds bytes; returns the complete sizes they finish. Garbage is refused, and the buffer is
    /// bounded: a size message is a few dozen bytes.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Resize>, ChannelError> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Resize>();
        let mut used = 0;
        loop {
            match de.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    used = de.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    let bad = String::from_utf8_lossy(&self.buf).into_owned();
                    self.buf.clear();
                    return Err(ChannelError::BadResize(bad));
                }
                None => break,
            }
        }
        self.buf.drain(..used);
        if self.buf.len() > 1024 {
            let bad = String::from_utf8_lossy(&self.buf[..64]).into_owned();
            self.buf.clear();
            return Err(ChannelError::BadResize(bad));
        }
        Ok(sizes)
    }
}

/// How a command ended, as reported on the error channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Success,
    /// A non-zero exit code.
    Exited(i32),
    /// The command could not run or was lost.
    Failed(String),
}

impl Outcome {
    pub fn from_code(code: i32) -> Self {
        if code == 0 {
            Outcome::Success
        } else {
            Outcome::Exited(code)
        }
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Cause {
    reason: String,
    message: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Details {
    causes: Vec<Cause>,
}

/// The `metav1.Status` object written to the error channel.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Status {
    metadata: serde_json::Map<String, serde_json::Value>,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
}

/// The error-channel JSON for `outcome`.
pub fn status_json(outcome: &Outcome) -> Vec<u8> {
    let mut status = Status {
        metadata: Default::default(),
        status: "Failure".into(),
        message: None,
        reason: None,
        details: None,
    };
    match outcome {
        Outcome::Success => status.status = "Success".into(),
        Outcome::Exited(code) => {
            status.message = Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            ));
            status.reason = Some("NonZeroExitCode".into());
            status.details = Some(Details {
                causes: vec![Cause {
                    reason: "ExitCode".into(),
                    message: code.to_string(),
                }],
            });
        }
        Outcome::Failed(message) => {
            status.message = Some(message.clone());
            status.reason = Some("InternalError".into());
        }
    }
    serde_json::to_vec(&status).unwrap_or_default()
}

/// The error-stream bytes for `outcome` under `protocol`: the `metav1.Status` JSON from v4 on, the
/// bare failure message before (nothing on success).
pub fn error_stream_bytes(protocol: &str, outcome: &Outcome) -> Vec<u8> {
    if protocol == V2 || protocol == V3 {
        return match outcome {
            Outcome::Success => Vec::new(),
            Outcome::Exited(code) => {
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes()
            }
            Outcome::Failed(message) => message.clone().into_bytes(),
        };
    }
    status_json(outcome)
}

/// Picks the first of the client's protocols (in its order of preference) that the server speaks.
pub fn negotiate<'a, S: AsRef<str>>(client: &[S], server: &[&'a str]) -> Option<&'a str> {
    client
        .iter()
        .flat_map(|c| c.as_ref().split(','))
        .map(str::trim)
        .find_map(|c| server.iter().find(|s| **s == c).copied())
}

/// The role of a port-forward stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStream {
    Data,
    Error,
}

/// The identity of a port-forward SPDY stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardStream {
    pub kind: PortStream,
    pub port: u16,
    pub request_id: String,
}

impl PortForwardStream {
    pub fn from_headers(h: &Headers) -> Result<Self, ChannelError> {
        let kind = match h.get(STREAM_TYPE_HEADER) {
            Some("data") => PortStream::Data,
            Some("error") => PortStream::Error,
            Some(other) => return Err(ChannelError::UnknownStreamType(other.to_string())),
            None => return Err(ChannelError::MissingStreamType),
        };
        let port = h
            .get(PORT_HEADER)
            .ok_or(ChannelError::MissingHeader(PORT_HEADER))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ChannelError::BadPort(port.to_string()))?;
        let request_id = h
            .get(REQUEST_ID_HEADER)
            .ok_or(ChannelError::MissingHeader(REQUEST_ID_HEADER))?
            .to_string();
        Ok(Self {
            kind,
            port,
            request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_vectors() {
        assert_eq!(
            status_json(&Outcome::Success),
            br#"{"metadata":{},"status":"Success"}"#
        );
        let v: serde_json::Value =
            serde_json::from_slice(&status_json(&Outcome::Exited(3))).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn websocket_framing() {
        assert_eq!(ws_frame(Channel::Stdout, b"hi"), [1, b'h', b'i']);
        assert_eq!(
            WsMessage::decode(&[0, b'x'], true),
            Ok(WsMessage::Data(Channel::Stdin, b"x"))
        );
        assert_eq!(
            WsMessage::decode(&[255, 0], true),
            Ok(WsMessage::Close(Channel::Stdin))
        );
        assert_eq!(
            WsMessage::decode(&[255, 0], false),
            Err(ChannelError::UnknownChannel(255))
        );
        assert_eq!(
            WsMessage::decode(&[], true),
            Err(ChannelError::EmptyMessage)
        );
        assert_eq!(
            WsMessage::decode(&[9], true),
            Err(ChannelError::UnknownChannel(9))
        );
    }

    #[test]
    fn resize_stream() {
        let mut d = ResizeDecoder::default();
        assert_eq!(d.feed(br#"{"Width":80,"#).unwrap(), vec![]);
        assert_eq!(
            d.feed(br#""Height":24}{"Width":100,"Height":50}"#).unwrap(),
            vec![
                Resize {
                    width: 80,
                    height: 24
                },
                Resize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert!(d.feed(b"nonsense").is_err());
        assert_eq!(
            Resize::parse(br#"{"Width":1,"Height":2}"#),
            Ok(Resize {
                width: 1,
                height: 2
            })
        );
    }

    #[test]
    fn negotiation_follows_client_preference() {
        assert_eq!(
            negotiate(
                &["v5.channel.k8s.io, v4.channel.k8s.io"],
                WEBSOCKET_PROTOCOLS
            ),
            Some(V5)
        );
        assert_eq!(
            negotiate(&["v4.channel.k8s.io", "v3.channel.k8s.io"], SPDY_PROTOCOLS),
            Some(V4)
        );
        assert_eq!(negotiate(&["v1.channel.k8s.io"], SPDY_PROTOCOLS), None);
        assert_eq!(negotiate(&["v3.channel.k8s.io"], SPDY_PROTOCOLS), Some(V3));
        assert!(error_stream_bytes(V3, &Outcome::Success).is_empty());
        assert!(
            String::from_utf8(error_stream_bytes(V2, &Outcome::Exited(2)))
                .unwrap()
                .contains("exit status 2")
        );
    }

    #[test]
    fn stream_headers() {
        let h = Headers::default().with("streamtype", "stdout");
        assert_eq!(Channel::from_headers(&h), Ok(Channel::Stdout));
        let pf = Headers::default()
            .with("streamtype", "data")
            .with("port", "8080")
            .with("requestid", "0");
        assert_eq!(
            PortForwardStream::from_headers(&pf),
            Ok(PortForwardStream {
                kind: PortStream::Data,
                port: 8080,
                request_id: "0".into()
            })
        );
        let bad = Headers::default()
            .with("streamtype", "data")
            .with("port", "0")
            .with("requestid", "0");
        assert!(matches!(
            PortForwardStream::from_headers(&bad),
            Err(ChannelError::BadPort(_))
        ));
    }
}
