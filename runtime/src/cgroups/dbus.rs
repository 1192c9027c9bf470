//! Just enough of the D-Bus wire protocol to call systemd's manager: EXTERNAL authentication, method
//! calls with string, boolean, integer, array, struct and variant arguments, and reading replies.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    #[error("D-Bus socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("D-Bus I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("D-Bus authentication refused: {0}")]
    Auth(String),
    #[error("D-Bus call {member} failed: {name}: {message}")]
    Call {
        member: String,
        name: String,
        message: String,
    },
    #[error("D-Bus protocol: {0}")]
    Protocol(String),
}

/// A value to marshal. Signatures follow from the value, except for empty arrays.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Path(String),
    Bool(bool),
    U32(u32),
    U64(u64),
    /// Element signature, elements.
    Array(String, Vec<Value>),
    Struct(Vec<Value>),
    Variant(Box<Value>),
}

impl Value {
    pub fn signature(&self) -> String {
        match self {
            Value::Str(_) => "s".into(),
            Value::Path(_) => "o".into(),
            Value::Bool(_) => "b".into(),
            Value::U32(_) => "u".into(),
            Value::U64(_) => "t".into(),
            Value::Array(sig, _) => format!("a{sig}"),
            Value::Struct(v) => format!("({})", v.iter().map(Value::signature).collect::<String>()),
            Value::Variant(_) => "v".into(),
        }
    }

    fn align(&self) -> usize {
        match self {
            Value::Str(_) | Value::Path(_) | Value::Bool(_) | Value::U32(_) | Value::Array(..) => 4,
            Value::U64(_) | Value::Struct(_) => 8,
            Value::Variant(_) => 1,
        }
    }
}

fn pad(buf: &mut Vec<u8>, align: usize) {
    while buf.len() % align != 0 {
        buf.push(0);
    }
}

fn sig_align(sig: &str) -> usize {
    match sig.as_bytes().first() {
        Some(b't' | b'x' | b'd' | b'(' | b'{') => 8,
        Some(b'y' | b'g' | b'v') => 1,
        Some(b'n' | b'q') => 2,
        _ => 4,
    }
}

/// Appends `v` in little-endian D-Bus encoding; offsets count from the start of the message.
pub fn marshal(buf: &mut Vec<u8>, v: &Value) {
    pad(buf, v.align());
    match v {
        Value::Str(s) | Value::Path(s) => {
            buf.extend((s.len() as u32).to_le_bytes());
            buf.extend(s.as_bytes());
            buf.push(0);
        }
        Value::Bool(b) => buf.extend(u32::from(*b).to_le_bytes()),
        Value::U32(n) => buf.extend(n.to_le_bytes()),
        Value::U64(n) => buf.extend(n.to_le_bytes()),
        Value::Array(sig, items) => {
            let len_at = buf.len();
            buf.extend(0u32.to_le_bytes());
            pad(buf, sig_align(sig));
            let start = buf.len();
            for i in items {
                marshal(buf, i);
            }
            let len = (buf.len() - start) as u32;
            buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        }
        Value::Struct(fields) => {
            for f in fields {
                marshal(buf, f);
            }
        }
        Value::Variant(inner) => {
            let sig = inner.signature();
            buf.push(sig.len() as u8);
            buf.extend(sig.as_bytes());
            buf.push(0);
            marshal(buf, inner);
        }
    }
}

/// Where a method call goes.
pub struct Call<'a> {
    pub destination: &'a str,
    pub path: &'a str,
    pub interface: &'a str,
    pub member: &'a str,
}

/// A complete method-call message.
pub fn method_call(serial: u32, call: &Call, args: &[Value]) -> Vec<u8> {
    let mut body = Vec::new();
    for a in args {
        marshal(&mut body, a);
    }
    let sig: String = args.iter().map(Value::signature).collect();
    let mut fields = vec![
        (1u8, Value::Path(call.path.into())),
        (2, Value::Str(call.interface.into())),
        (3, Value::Str(call.member.into())),
        (6, Value::Str(call.destination.into())),
    ];
    if !sig.is_empty() {
        // The signature field is of type `g`, written by `header_field` itself.
        fields.push((8, Value::Str(sig.clone())));
    }
    let mut msg = vec![b'l', 1, 0, 1];
    msg.extend((body.len() as u32).to_le_bytes());
    msg.extend(serial.to_le_bytes());
    let arr_at = msg.len();
    msg.extend(0u32.to_le_bytes());
    let start = msg.len();
    for (code, v) in &fields {
        header_field(&mut msg, *code, v);
    }
    let len = (msg.len() - start) as u32;
    msg[arr_at..arr_at + 4].copy_from_slice(&len.to_le_bytes());
    pad(&mut msg, 8);
    msg.extend(body);
    msg
}

/// A header field `(yv)`.
fn header_field(msg: &mut Vec<u8>, code: u8, v: &Value) {
    pad(msg, 8);
    msg.push(code);
    match (code, v) {
        (8, Value::Str(sig)) => {
            msg.extend([1, b'g', 0]);
            msg.push(sig.len() as u8);
            msg.extend(sig.as_bytes());
            msg.push(0);
        }
        _ => {
            let s = v.signature();
            msg.push(s.len() as u8);
            msg.extend(s.as_bytes());
            msg.push(0);
            marshal(msg, v);
        }
    }
}

/// A received message: its type, reply serial, error name, signature and body.
#[derive(Debug, Default)]
pub struct Message {
    pub kind: u8,
    pub reply_serial: u32,
    pub error_name: String,
    pub member: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Message {
    /// The first string argument (an error's message, a job's object path).
    pub fn first_string(&self) -> String {
        if self.body.len() < 4 || !matches!(self.signature.as_bytes().first(), Some(b's' | b'o')) {
            return String::new();
        }
        let n =
            u32::from_le_bytes([self.body[0], self.body[1], self.body[2], self.body[3]]) as usize;
        self.body
            .get(4..4 + n)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default()
    }
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, DbusError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| DbusError::Protocol("short message".into()))
}

fn align_up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

/// Parses the header fields this client needs from a little-endian message.
pub fn parse(head: &[u8], body: Vec<u8>) -> Result<Message, DbusError> {
    if head.first() != Some(&b'l') {
        return Err(DbusError::Protocol("big-endian message".into()));
    }
    let mut m = Message {
        kind: head[1],
        body,
        ..Default::default()
    };
    let end = 16 + u32_at(head, 12)? as usize;
    let mut at = 16;
    while at < end {
        at = align_up(at, 8);
        if at >= end {
            break;
        }
        let code = head[at];
        let slen = head[at + 1] as usize;
        let sig = head[at + 2] as char;
        at += 3 + slen;
        match sig {
            's' | 'o' => {
                at = align_up(at, 4);
                let n = u32_at(head, at)? as usize;
                let s = String::from_utf8_lossy(&head[at + 4..at + 4 + n]).into_owned();
                at += 4 + n + 1;
                match code {
                    3 => m.member = s,
                    4 => m.error_name = s,
                    _ => {}
                }
            }
            'u' => {
                at = align_up(at, 4);
                if code == 5 {
                    m.reply_serial = u32_at(head, at)?;
                }
                at += 4;
            }
            'g' => {
                let n = head[at] as usize;
                if code == 8 {
                    m.signature = String::from_utf8_lossy(&head[at + 1..at + 1 + n]).into_owned();
                }
                at += 1 + n + 1;
            }
            other => return Err(DbusError::Protocol(format!("header field type {other}"))),
        }
    }
    Ok(m)
}

pub struct Connection {
    sock: UnixStream,
    serial: u32,
}

impl Connection {
    /// Connects to `path` and authenticates as our uid; `hello` for a bus daemon (not systemd's
    /// private socket).
    pub fn open(path: &Path, hello: bool) -> Result<Connection, DbusError> {
        let sock = UnixStream::connect(path).map_err(|source| DbusError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = Connection { sock, serial: 0 };
        c.auth()?;
        if hello {
            let call = Call {
                destination: "org.freedesktop.DBus",
                path: "/org/freedesktop/DBus",
                interface: "org.freedesktop.DBus",
                member: "Hello",
            };
            c.call(&call, &[])?;
        }
        Ok(c)
    }

    fn auth(&mut self) -> Result<(), DbusError> {
        // SAFETY: getuid has no arguments and cannot fail.
        let uid = unsafe { libc::getuid() }.to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        self.sock.write_all(b"\0")?;
        self.sock
            .write_all(format!("AUTH EXTERNAL {hex}\r\n").as_bytes())?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            self.sock.read_exact(&mut b)?;
            line.push(b[0]);
        }
        let text = String::from_utf8_lossy(&line).trim().to_owned();
        if !text.starts_with("OK ") {
            return Err(DbusError::Auth(text));
        }
        self.sock.write_all(b"BEGIN\r\n")?;
        Ok(())
    }

    pub fn send(&mut self, call: &Call, args: &[Value]) -> Result<u32, DbusError> {
        self.serial += 1;
        self.sock.write_all(&method_call(self.serial, call, args))?;
        Ok(self.serial)
    }

    pub fn recv(&mut self) -> Result<Message, DbusError> {
        let mut fixed = [0u8; 16];
        self.sock.read_exact(&mut fixed)?;
        let body_len = u32_at(&fixed, 4)? as usize;
        let fields_len = u32_at(&fixed, 12)? as usize;
        let mut head = fixed.to_vec();
        head.resize(align_up(16 + fields_len, 8), 0);
        self.sock.read_exact(&mut head[16..])?;
        let mut body = vec![0u8; body_len];
        self.sock.read_exact(&mut body)?;
        parse(&head, body)
    }

    /// Calls and waits for the reply, skipping signals meanwhile.
    pub fn call(&mut self, call: &Call, args: &[Value]) -> Result<Message, DbusError> {
        let serial = self.send(call, args)?;
        loop {
            let m = self.recv()?;
            if m.reply_serial != serial {
                continue;
            }
            if m.kind == 3 {
                return Err(DbusError::Call {
                    member: call.member.into(),
                    name: m.error_name.clone(),
                    message: m.first_string(),
                });
            }
            return Ok(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_array_of_structs() {
        let props = Value::Array(
            "(sv)".into(),
            vec![Value::Struct(vec![
                Value::Str("MemoryMax".into()),
                Value::Variant(Box::new(Value::U64(1 << 20))),
            ])],
        );
        assert_eq!(props.signature(), "a(sv)");
        let mut b = Vec::new();
        marshal(&mut b, &props);
        // length, pad to 8, "MemoryMax", variant "t", pad to 8, u64
        assert_eq!(&b[0..4], &32u32.to_le_bytes());
        assert_eq!(&b[8..12], &9u32.to_le_bytes());
        assert_eq!(&b[12..22], b"MemoryMax\0");
        assert_eq!(&b[22..25], &[1, b't', 0]);
        assert_eq!(&b[32..40], &(1u64 << 20).to_le_bytes());
    }

    #[test]
    fn method_call_header_parses_back() {
        let call = Call {
            destination: "org.freedesktop.systemd1",
            path: "/org/freedesktop/systemd1",
            interface: "org.freedesktop.systemd1.Manager",
            member: "StopUnit",
        };
        let args = [Value::Str("x.scope".into()), Value::Str("replace".into())];
        let msg = method_call(7, &call, &args);
        let fields = u32::from_le_bytes([msg[12], msg[13], msg[14], msg[15]]) as usize;
        let head_end = align_up(16 + fields, 8);
        let m = parse(&msg[..head_end], msg[head_end..].to_vec()).unwrap();
        assert_eq!(m.kind, 1);
        assert_eq!(m.member, "StopUnit");
        assert_eq!(m.signature, "ss");
        assert_eq!(m.first_string(), "x.scope");
        assert_eq!(
            msg.len() - head_end,
            u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]) as usize
        );
    }
}
