//! SPDY/3 name/value header blocks (draft §2.6.10): a 32-bit pair count, then length-prefixed names
//! and values, multiple values of one name joined by NUL, the whole zlib-compressed with the SPDY
//! dictionary in one compression context per direction for the life of the session.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub use super::dictionary::{DICTIONARY, DICTIONARY_ID};

/// Largest inflated header block accepted unless configured otherwise.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why a header block is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("SPDY header block inflates past the limit of {max} bytes")]
    TooLarge { max: usize },
    #[error("SPDY header block is not a valid zlib stream: {0}")]
    Compression(String),
    #[error("SPDY header block announces dictionary {0:#010x}, not the SPDY/3 dictionary")]
    WrongDictionary(u32),
    #[error("SPDY header block is truncated at byte {0}")]
    Truncated(usize),
    #[error("SPDY header block has {0} trailing bytes")]
    Trailing(usize),
    #[error("SPDY header name {0:?} is empty, not lower-case or not valid UTF-8")]
    BadName(String),
    #[error("SPDY header {0:?} has an empty value or a value that is not valid UTF-8")]
    BadValue(String),
    #[error("SPDY header {0:?} appears twice")]
    Duplicate(String),
}

/// A decoded header block: names (lower-case) with their values, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, Vec<String>)>);

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.first().map(String::as_str))
    }

    /// Adds a single-valued header.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0
            .push((name.to_ascii_lowercase(), vec![value.to_string()]));
        self
    }

    /// The uncompressed wire form.
    pub fn to_block(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (name, values) in &self.0 {
            let value = values.join("\0");
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block.
    pub fn from_block(block: &[u8]) -> Result<Self, HeaderError> {
        let mut at = 0;
        let count = take_u32(block, &mut at)?;
        let mut pairs: Vec<(String, Vec<String>)> = Vec::new();
        for _ in 0..count {
            let name = take_str(block, &mut at)?;
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty() && !n.bytes().any(|b| b.is_ascii_uppercase()))
                .ok_or_else(|| HeaderError::BadName(String::from_utf8_lossy(name).into()))?
                .to_string();
            let value = take_str(block, &mut at)?;
            let value =
                std::str::from_utf8(value).map_err(|_| HeaderError::BadValue(name.clone()))?;
            let values: Vec<String> = value.split('\0').map(str::to_string).collect();
            if values.len() > 1 && values.iter().any(String::is_empty) {
                return Err(HeaderError::BadValue(name));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(HeaderError::Duplicate(name));
            }
            pairs.push((name, values));
        }
        if at != block.len() {
            return Err(HeaderError::Trailing(block.len() - at));
        }
        Ok(Headers(pairs))
    }
}

fn take_u32(block: &[u8], at: &mut usize) -> Result<u32, HeaderError> {
    let bytes = block.get(*at..*at + 4).ok_or(HeaderError::Truncated(*at))?;
    *at += 4;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn take_str<'a>(block: &'a [u8], at: &mut usize) -> Result<&'a [u8], HeaderError> {
    let len = take_u32(block, at)? as usize;
    let end = at.checked_add(len).ok_or(HeaderError::Truncated(*at))?;
    let bytes = block.get(*at..end).ok_or(HeaderError::Truncated(*at))?;
    *at = end;
    Ok(bytes)
}

/// The sending side's compression context.
pub struct Encoder {
    z: Compress,
    primed: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            z: Compress::new(Compression::default(), true),
            primed: false,
        }
    }

    /// Compresses `headers`, ending on a sync flush so the peer can inflate this block on its own.
    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, HeaderError> {
        if !self.primed {
            self.z
                .set_dictionary(&DICTIONARY)
                .map_err(|e| HeaderError::Compression(e.to_string()))?;
            self.primed = true;
        }
        let block = headers.to_block();
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = block.as_slice();
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Compression(e.to_string()))?;
            input = &input[(self.z.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The receiving side's decompression context, with a bound on each inflated block.
pub struct Decoder {
    z: Decompress,
    max: usize,
}

impl Decoder {
    pub fn new(max: usize) -> Self {
        Self {
            z: Decompress::new(true),
            max,
        }
    }

    /// Inflates and parses one header block. After an error the context is unusable: the session must end.
    pub fn decode(&mut self, compressed: &[u8]) -> Result<Headers, HeaderError> {
        let raw = self.inflate(compressed)?;
        Headers::from_block(&raw)
    }

    fn inflate(&mut self, compressed: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(self.max.min(4096));
        let mut input = compressed;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= self.max {
                    return Err(HeaderError::TooLarge { max: self.max });
                }
                out.reserve_exact((self.max - out.len()).min(out.capacity().max(4096)));
            }
            let before = self.z.total_in();
            let produced = out.len();
            let result = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            match result {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if used == 0 && out.len() == produced && out.len() < out.capacity() {
                        return Err(HeaderError::Compression("no progress".into()));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        self.z
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| HeaderError::Compression(e.to_string()))?;
                    }
                    Some(other) => return Err(HeaderError::WrongDictionary(other)),
                    None => return Err(HeaderError::Compression(e.to_string())),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spec_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in DICTIONARY.iter() {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, DICTIONARY_ID);
    }

    fn sample() -> Headers {
        Headers::default()
            .with("streamtype", "stdout")
            .with(":method", "GET")
            .with("port", "8080")
    }

    #[test]
    fn uncompressed_block_vector() {
        let h = Headers::default().with("a", "bc");
        assert_eq!(
            h.to_block(),
            [0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c']
        );
        let multi = Headers::from_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'x', 0, 0, 0, 3, b'1', 0, b'2']);
        assert_eq!(
            multi.unwrap().0,
            vec![("x".to_string(), vec!["1".to_string(), "2".to_string()])]
        );
    }

    #[test]
    fn compressed_stream_announces_the_dictionary_and_inflates_independently() {
        let mut enc = Encoder::new();
        let wire = enc.encode(&sample()).unwrap();
        // zlib header with FDICT set, then the dictionary's Adler-32 (RFC 1950 §2.2).
        assert_eq!(wire[0], 0x78);
        assert_ne!(wire[1] & 0x20, 0);
        assert_eq!(u16::from_be_bytes([wire[0], wire[1]]) % 31, 0);
        assert_eq!(&wire[2..6], &DICTIONARY_ID.to_be_bytes());
        // A sync flush ends every block.
        assert!(wire.ends_with(&[0, 0, 0xff, 0xff]));

        let mut z = Decompress::new(true);
        let mut out = Vec::with_capacity(4096);
        let err = z
            .decompress_vec(&wire, &mut out, FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(DICTIONARY_ID));
        z.set_dictionary(&DICTIONARY).unwrap();
        let used = z.total_in() as usize;
        z.decompress_vec(&wire[used..], &mut out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, sample().to_block());
    }

    #[test]
    fn one_context_per_direction() {
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(DEFAULT_MAX_HEADER_BYTES);
        for i in 0..5 {
            let h = sample().with("requestid", &i.to_string());
            let wire = enc.encode(&h).unwrap();
            if i > 0 {
                // Later blocks continue the stream: no new zlib header.
                assert_ne!(&wire[..2], &[0x78, 0xbb]);
            }
            assert_eq!(dec.decode(&wire).unwrap(), h);
        }
    }

    #[test]
    fn oversized_block_is_refused() {
        let big = "v".repeat(100_000);
        let wire = Encoder::new()
            .encode(&Headers::default().with("x", &big))
            .unwrap();
        assert!(wire.len() < 2000, "compresses well: {}", wire.len());
        assert_eq!(
            Decoder::new(16 * 1024).decode(&wire),
            Err(HeaderError::TooLarge { max: 16 * 1024 })
        );
    }

    #[test]
    fn hostile_blocks_are_typed_errors() {
        assert!(matches!(
            Headers::from_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'A', 0, 0, 0, 0]),
            Err(HeaderError::BadName(_))
        ));
        assert!(matches!(
            Headers::from_block(&[
                0, 0, 0, 2, 0, 0, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 0, 0
            ]),
            Err(HeaderError::Duplicate(_))
        ));
        assert!(matches!(
            Headers::from_block(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 9]),
            Err(HeaderError::Truncated(_))
        ));
        assert!(matches!(
            Headers::from_block(&[0, 0, 0, 0, 1]),
            Err(HeaderError::Trailing(1))
        ));
        assert!(matches!(
            Decoder::new(1024).decode(&[0x78, 0x9c, 0xff, 0xff, 0xff]),
            Err(HeaderError::Compression(_))
        ));
        // A stream built on another dictionary.
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(b"not the spdy dictionary").unwrap();
        let mut out = Vec::with_capacity(256);
        z.compress_vec(&[0, 0, 0, 0], &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(matches!(
            Decoder::new(1024).decode(&out),
            Err(HeaderError::WrongDictionary(_))
        ));
    }
}
