//! The CRI log line, `TIMESTAMP STREAM TAG MESSAGE\n`, and the RFC 3339 times it and the
//! `sinceTime` parameter carry.

/// One parsed line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Nanoseconds since the epoch.
    pub time: i64,
    pub stream: &'a [u8],
    /// `P`: a part of a longer line, continued by the next record.
    pub partial: bool,
    /// The message without the line's newline.
    pub message: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("the log line has fewer than four fields")]
    Fields,
    #[error("the log line's tag {0:?} is neither P nor F")]
    Tag(String),
    #[error("{0:?} is not an RFC 3339 time")]
    Time(String),
}

/// Parses one line (with or without its newline).
pub fn parse(line: &[u8]) -> Result<Record<'_>, FormatError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |&b| b == b' ');
    let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(FormatError::Fields);
    };
    let message = parts.next().unwrap_or_default();
    let ts = std::str::from_utf8(ts).map_err(|_| FormatError::Time("?".into()))?;
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        other => return Err(FormatError::Tag(String::from_utf8_lossy(other).into())),
    };
    Ok(Record {
        time: parse_time(ts)?,
        stream,
        partial,
        message,
    })
}

/// Parses RFC 3339 (`2006-01-02T15:04:05[.999999999](Z|±hh:mm)`) into nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, FormatError> {
    let bad = || FormatError::Time(s.chars().take(64).collect());
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, FormatError> {
        let part = s.get(r).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        nanos = frac[..digits].parse::<i64>().map_err(|_| bad())? * 10i64.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh = num(s.len() - 5..s.len() - 3)?;
            let om = num(s.len() - 2..s.len())?;
            if &rest[3..4] != ":" {
                return Err(bad());
            }
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    Ok(secs * 1_000_000_000 + nanos)
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// A time as kubelet prints it before a line (Go's RFC3339Nano: trailing zeros of the fraction
/// dropped, no fraction at all on a whole second).
pub fn format_time(nanos: i64) -> String {
    let full = skiff_runtime::state::rfc3339(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000) as u32,
    );
    // `full` ends in `.NNNNNNNNNZ`.
    let body = full.trim_end_matches('Z').trim_end_matches('0');
    format!("{}Z", body.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        let r = parse(b"2026-12-06T16:00:00.123456789Z stdout F hello world\n").unwrap();
        assert_eq!(r.stream, b"stdout");
        assert!(!r.partial);
        assert_eq!(r.message, b"hello world");
        assert_eq!(r.time, 1_796_572_800_123_456_789);
        let p = parse(b"2026-12-06T16:00:00Z stderr P ").unwrap();
        assert!(p.partial);
        assert_eq!(p.message, b"");
        assert_eq!(
            parse(b"2026-12-06T16:00:00Z stdout"),
            Err(FormatError::Fields)
        );
        assert!(matches!(
            parse(b"2026-12-06T16:00:00Z stdout X m"),
            Err(FormatError::Tag(_))
        ));
        assert!(matches!(
            parse(b"yesterday stdout F m"),
            Err(FormatError::Time(_))
        ));
    }

    #[test]
    fn times_round_trip_and_take_offsets() {
        let t = parse_time("2026-12-06T16:00:00.5Z").unwrap();
        assert_eq!(format_time(t), "2026-12-06T16:00:00.5Z");
        assert_eq!(format_time(t - 500_000_000), "2026-12-06T16:00:00Z");
        assert_eq!(
            parse_time("2026-12-06T17:30:00+01:30").unwrap(),
            t - 500_000_000
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z").unwrap(),
            951_782_400_000_000_000
        );
        for bad in [
            "2026-12-06 16:00:00Z",
            "2026-13-06T16:00:00Z",
            "2026-12-06T16:00:00",
            "x",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
