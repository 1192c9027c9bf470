//! SPDY/3.1 frames (draft-mbelshe-httpbis-spdy-00 §2.2, §2.6 and the 3.1 session flow-control change):
//! incremental parsing from a byte buffer with strict validation, and serialization.
//!
//! Header blocks stay compressed here: their zlib context spans the whole session, so only the
//! session, which sees frames in order, can inflate them (see `headers`).

use bytes::{BufMut, Bytes, BytesMut};

/// The only protocol version spoken.
pub const VERSION: u16 = 3;
/// Every frame starts with this many bytes.
pub const HEADER_LEN: usize = 8;
/// The largest length the 24-bit length field can carry.
pub const MAX_LENGTH: usize = 0x00ff_ffff;
/// A frame longer than this is refused unless configured otherwise.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Flag shared by SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM only: the recipient must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// SETTINGS only: forget persisted settings.
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// Control frame types.
pub mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// SETTINGS ids.
pub mod setting {
    pub const MAX_CONCURRENT_STREAMS: u32 = 4;
    pub const INITIAL_WINDOW_SIZE: u32 = 7;
}

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY control frame version {0}, only 3 is spoken")]
    BadVersion(u16),
    #[error("SPDY frame of {length} bytes exceeds the limit of {max}")]
    TooLarge { length: usize, max: usize },
    #[error("SPDY {frame} frame length {length} is invalid")]
    BadLength { frame: &'static str, length: usize },
    #[error("SPDY {frame} frame on stream id 0")]
    ZeroStreamId { frame: &'static str },
    #[error("SPDY {frame} frame carries unknown flags {flags:#04x}")]
    BadFlags { frame: &'static str, flags: u8 },
    #[error("SPDY {frame} frame field {field} has invalid value {value}")]
    BadValue {
        frame: &'static str,
        field: &'static str,
        value: u32,
    },
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded frame. Header blocks are the compressed bytes as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        header_block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this version does not know; the spec says to ignore it.
    Unknown {
        kind: u16,
    },
}

/// Parses one frame from the front of `buf`. `Ok(None)`: more bytes are needed. `Ok(Some((frame, n)))`:
/// the frame used the first `n` bytes. A frame's declared length is checked against `max_frame` as soon
/// as its header is in, so an oversized frame is refused before it is buffered.
pub fn parse(buf: &[u8], max_frame: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let word0 = be32(buf, 0);
    let flags = buf[4];
    let length = (be32(buf, 4) & 0x00ff_ffff) as usize;
    if length > max_frame {
        return Err(FrameError::TooLarge {
            length,
            max: max_frame,
        });
    }
    if word0 & 0x8000_0000 != 0 {
        let version = ((word0 >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::BadVersion(version));
        }
    }
    let total = HEADER_LEN + length;
    if buf.len() < total {
        return Ok(None);
    }
    let body = Bytes::copy_from_slice(&buf[HEADER_LEN..total]);
    let frame = if word0 & 0x8000_0000 != 0 {
        control((word0 & 0xffff) as u16, flags, body)?
    } else {
        data(word0 & STREAM_ID_MASK, flags, body)?
    };
    Ok(Some((frame, total)))
}

fn data(stream_id: u32, flags: u8, data: Bytes) -> Result<Frame, FrameError> {
    check_stream("DATA", stream_id)?;
    check_flags("DATA", flags, FLAG_FIN)?;
    Ok(Frame::Data {
        stream_id,
        flags,
        data,
    })
}

fn control(kind: u16, flags: u8, body: Bytes) -> Result<Frame, FrameError> {
    match kind {
        kind::SYN_STREAM => syn_stream(flags, body),
        kind::SYN_REPLY => {
            let (stream_id, header_block) = stream_and_block("SYN_REPLY", flags, body)?;
            Ok(Frame::SynReply {
                stream_id,
                flags,
                header_block,
            })
        }
        kind::HEADERS => {
            let (stream_id, header_block) = stream_and_block("HEADERS", flags, body)?;
            Ok(Frame::Headers {
                stream_id,
                flags,
                header_block,
            })
        }
        kind::RST_STREAM => rst_stream(flags, &body),
        kind::SETTINGS => settings(flags, &body),
        kind::PING => {
            check_len("PING", &body, 4)?;
            check_flags("PING", flags, 0)?;
            Ok(Frame::Ping { id: be32(&body, 0) })
        }
        kind::GOAWAY => {
            check_len("GOAWAY", &body, 8)?;
            check_flags("GOAWAY", flags, 0)?;
            Ok(Frame::GoAway {
                last_good_stream_id: be32(&body, 0) & STREAM_ID_MASK,
                status: be32(&body, 4),
            })
        }
        kind::WINDOW_UPDATE => window_update(flags, &body),
        other => Ok(Frame::Unknown { kind: other }),
    }
}

fn syn_stream(flags: u8, body: Bytes) -> Result<Frame, FrameError> {
    if body.len() < 10 {
        return Err(bad_len("SYN_STREAM", body.len()));
    }
    check_flags("SYN_STREAM", flags, FLAG_FIN | FLAG_UNIDIRECTIONAL)?;
    let stream_id = be32(&body, 0) & STREAM_ID_MASK;
    check_stream("SYN_STREAM", stream_id)?;
    Ok(Frame::SynStream {
        stream_id,
        associated_id: be32(&body, 4) & STREAM_ID_MASK,
        priority: body[8] >> 5,
        slot: body[9],
        flags,
        header_block: body.slice(10..),
    })
}

fn stream_and_block(
    frame: &'static str,
    flags: u8,
    body: Bytes,
) -> Result<(u32, Bytes), FrameError> {
    if body.len() < 4 {
        return Err(bad_len(frame, body.len()));
    }
    check_flags(frame, flags, FLAG_FIN)?;
    let stream_id = be32(&body, 0) & STREAM_ID_MASK;
    check_stream(frame, stream_id)?;
    Ok((stream_id, body.slice(4..)))
}

fn rst_stream(flags: u8, body: &[u8]) -> Result<Frame, FrameError> {
    check_len("RST_STREAM", body, 8)?;
    check_flags("RST_STREAM", flags, 0)?;
    let stream_id = be32(body, 0) & STREAM_ID_MASK;
    check_stream("RST_STREAM", stream_id)?;
    let status = be32(body, 4);
    if status == 0 {
        return Err(FrameError::BadValue {
            frame: "RST_STREAM",
            field: "status",
            value: 0,
        });
    }
    Ok(Frame::RstStream { stream_id, status })
}

fn settings(flags: u8, body: &[u8]) -> Result<Frame, FrameError> {
    check_flags("SETTINGS", flags, FLAG_SETTINGS_CLEAR)?;
    if body.len() < 4 {
        return Err(bad_len("SETTINGS", body.len()));
    }
    let count = be32(body, 0) as usize;
    if count.checked_mul(8).and_then(|n| n.checked_add(4)) != Some(body.len()) {
        return Err(bad_len("SETTINGS", body.len()));
    }
    let entries = body[4..]
        .chunks_exact(8)
        .map(|e| Setting {
            flags: e[0],
            id: be32(e, 0) & 0x00ff_ffff,
            value: be32(e, 4),
        })
        .collect();
    Ok(Frame::Settings { flags, entries })
}

fn window_update(flags: u8, body: &[u8]) -> Result<Frame, FrameError> {
    check_len("WINDOW_UPDATE", body, 8)?;
    check_flags("WINDOW_UPDATE", flags, 0)?;
    let delta = be32(body, 4) & STREAM_ID_MASK;
    if delta == 0 {
        return Err(FrameError::BadValue {
            frame: "WINDOW_UPDATE",
            field: "delta",
            value: 0,
        });
    }
    Ok(Frame::WindowUpdate {
        stream_id: be32(body, 0) & STREAM_ID_MASK,
        delta,
    })
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn bad_len(frame: &'static str, length: usize) -> FrameError {
    FrameError::BadLength { frame, length }
}

fn check_len(frame: &'static str, body: &[u8], want: usize) -> Result<(), FrameError> {
    if body.len() != want {
        return Err(bad_len(frame, body.len()));
    }
    Ok(())
}

fn check_flags(frame: &'static str, flags: u8, allowed: u8) -> Result<(), FrameError> {
    if flags & !allowed != 0 {
        return Err(FrameError::BadFlags { frame, flags });
    }
    Ok(())
}

fn check_stream(frame: &'static str, stream_id: u32) -> Result<(), FrameError> {
    if stream_id == 0 {
        return Err(FrameError::ZeroStreamId { frame });
    }
    Ok(())
}

impl Frame {
    /// Appends the wire form of the frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & STREAM_ID_MASK);
                put_flags_len(out, *flags, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                slot,
                flags,
                header_block,
            } => {
                put_control(out, kind::SYN_STREAM, *flags, 10 + header_block.len());
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(associated_id & STREAM_ID_MASK);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(*slot);
                out.put_slice(header_block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => put_block(out, kind::SYN_REPLY, *flags, *stream_id, header_block),
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => put_block(out, kind::HEADERS, *flags, *stream_id, header_block),
            Frame::RstStream { stream_id, status } => {
                put_control(out, kind::RST_STREAM, 0, 8);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                put_control(out, kind::SETTINGS, *flags, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for e in entries {
                    out.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    out.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                put_control(out, kind::PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control(out, kind::GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_control(out, kind::WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(delta & STREAM_ID_MASK);
            }
            Frame::Unknown { kind } => put_control(out, *kind, 0, 0),
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

fn put_control(out: &mut BytesMut, kind: u16, flags: u8, length: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    put_flags_len(out, flags, length);
}

/// The 8 bytes in front of a DATA frame's payload, for writers that send the payload from
/// elsewhere.
pub fn data_header(stream_id: u32, flags: u8, length: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&(stream_id & STREAM_ID_MASK).to_be_bytes());
    h[4..]
        .copy_from_slice(&((u32::from(flags) << 24) | (length as u32 & 0x00ff_ffff)).to_be_bytes());
    h
}

fn put_flags_len(out: &mut BytesMut, flags: u8, length: usize) {
    out.put_u32((u32::from(flags) << 24) | (length as u32 & 0x00ff_ffff));
}

fn put_block(out: &mut BytesMut, kind: u16, flags: u8, stream_id: u32, block: &[u8]) {
    put_control(out, kind, flags, 4 + block.len());
    out.put_u32(stream_id & STREAM_ID_MASK);
    out.put_slice(block);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Frame, FrameError> {
        let (frame, used) = parse(bytes, DEFAULT_MAX_FRAME)?.expect("a whole frame");
        assert_eq!(used, bytes.len());
        Ok(frame)
    }

    // Byte layouts drawn from the frame diagrams of draft-mbelshe-httpbis-spdy-00 §2.6.
    #[test]
    fn ping_vector() {
        let wire = [
            0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
        ];
        assert_eq!(one(&wire), Ok(Frame::Ping { id: 1 }));
        assert_eq!(Frame::Ping { id: 1 }.to_bytes().as_ref(), wire);
    }

    #[test]
    fn syn_stream_vector() {
        let wire = [
            0x80, 0x03, 0x00, 0x01, // control, version 3, SYN_STREAM
            0x01, 0x00, 0x00, 0x0c, // FIN, length 12
            0x00, 0x00, 0x00, 0x05, // stream 5
            0x00, 0x00, 0x00, 0x00, // associated 0
            0x60, 0x00, // priority 3, slot 0
            0xab, 0xcd, // header block
        ];
        let frame = Frame::SynStream {
            stream_id: 5,
            associated_id: 0,
            priority: 3,
            slot: 0,
            flags: FLAG_FIN,
            header_block: Bytes::from_static(&[0xab, 0xcd]),
        };
        assert_eq!(one(&wire), Ok(frame.clone()));
        assert_eq!(frame.to_bytes().as_ref(), wire);
    }

    #[test]
    fn data_window_rst_goaway_settings_vectors() {
        let cases: Vec<(Vec<u8>, Frame)> = vec![
            (
                vec![0, 0, 0, 3, 0x01, 0, 0, 2, b'h', b'i'],
                Frame::Data {
                    stream_id: 3,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"hi"),
                },
            ),
            (
                vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0],
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 65536,
                },
            ),
            (
                vec![0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 5],
                Frame::RstStream {
                    stream_id: 7,
                    status: rst::CANCEL,
                },
            ),
            (
                vec![0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 1],
                Frame::GoAway {
                    last_good_stream_id: 9,
                    status: goaway::PROTOCOL_ERROR,
                },
            ),
            (
                vec![
                    0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0x01, 0, 0, 7, 0, 0, 0x40, 0,
                ],
                Frame::Settings {
                    flags: 0,
                    entries: vec![Setting {
                        flags: 1,
                        id: setting::INITIAL_WINDOW_SIZE,
                        value: 16384,
                    }],
                },
            ),
            (
                vec![0x80, 3, 0, 2, 0, 0, 0, 5, 0, 0, 0, 1, 0x78],
                Frame::SynReply {
                    stream_id: 1,
                    flags: 0,
                    header_block: Bytes::from_static(&[0x78]),
                },
            ),
            (
                vec![0x80, 3, 0, 8, 1, 0, 0, 4, 0, 0, 0, 1],
                Frame::Headers {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    header_block: Bytes::new(),
                },
            ),
        ];
        for (wire, frame) in cases {
            assert_eq!(one(&wire), Ok(frame.clone()), "{wire:02x?}");
            assert_eq!(frame.to_bytes().as_ref(), wire.as_slice());
        }
    }

    #[test]
    fn incremental() {
        let wire = Frame::Ping { id: 9 }.to_bytes();
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut], DEFAULT_MAX_FRAME), Ok(None));
        }
        let mut two = wire.to_vec();
        two.extend_from_slice(&wire);
        let (_, used) = parse(&two, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(used, wire.len());
    }

    #[test]
    fn unknown_type_is_skipped() {
        let wire = [0x80, 3, 0, 10, 0, 0, 0, 2, 1, 2];
        assert_eq!(one(&wire), Ok(Frame::Unknown { kind: 10 }));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let max = DEFAULT_MAX_FRAME;
        let err = |b: &[u8]| parse(b, max).unwrap_err();
        assert_eq!(
            err(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
            FrameError::BadVersion(2)
        );
        assert!(matches!(
            err(&[0x80, 3, 0, 6, 0, 0, 0, 3, 0, 0, 0]),
            FrameError::BadLength { frame: "PING", .. }
        ));
        assert!(matches!(
            err(&[0, 0, 0, 0, 0, 0, 0, 1, 7]),
            FrameError::ZeroStreamId { frame: "DATA" }
        ));
        assert!(matches!(
            err(&[0, 0, 0, 1, 0x02, 0, 0, 1, 7]),
            FrameError::BadFlags { frame: "DATA", .. }
        ));
        assert!(matches!(
            err(&[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0]),
            FrameError::BadValue { field: "delta", .. }
        ));
        assert!(matches!(
            err(&[0x80, 3, 0, 4, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0]),
            FrameError::BadLength {
                frame: "SETTINGS",
                ..
            }
        ));
        assert!(matches!(
            err(&[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]),
            FrameError::ZeroStreamId { .. }
        ));
        assert!(matches!(
            err(&[0x80, 3, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1]),
            FrameError::BadLength {
                frame: "SYN_STREAM",
                ..
            }
        ));
        // The declared length alone condemns an oversized frame, before its body arrives.
        assert_eq!(
            parse(&[0, 0, 0, 1, 0, 0x10, 0, 1], 4096).unwrap_err(),
            FrameError::TooLarge {
                length: 0x100001,
                max: 4096
            }
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            let mut buf = [0u8; 24];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            if x & 1 == 0 {
                buf[0] = 0x80;
                buf[1] = 3;
                buf[5] = 0;
                buf[6] = 0;
            }
            let _ = parse(&buf, 64);
        }
    }
}
