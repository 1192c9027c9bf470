//! Kubernetes resource quantities (`100Mi`, `250m`, `1.5G`, `2e3`) and the percentages eviction
//! thresholds may use instead.

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0:?} is not a quantity")]
pub struct QuantityError(pub String);

/// The value of `q` in its base unit (bytes, cores), as a float: reservations and thresholds are
/// compared, never summed into exact API values.
pub fn parse(q: &str) -> Result<f64, QuantityError> {
    let bad = || QuantityError(q.to_owned());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            10f64.powi(exp)
        }
        _ => return Err(bad()),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok(n * scale)
}

/// An amount or a share of the capacity, as `evictionHard` values are written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Absolute(f64),
    /// A fraction in 0..=1.
    Share(f64),
}

impl Amount {
    pub fn parse(v: &str) -> Result<Amount, QuantityError> {
        match v.trim().strip_suffix('%') {
            Some(p) => {
                let share: f64 = p.parse().map_err(|_| QuantityError(v.to_owned()))?;
                if !(0.0..=100.0).contains(&share) {
                    return Err(QuantityError(v.to_owned()));
                }
                Ok(Amount::Share(share / 100.0))
            }
            None => parse(v).map(Amount::Absolute),
        }
    }

    /// The amount against a capacity of `capacity`.
    pub fn of(self, capacity: f64) -> f64 {
        match self {
            Amount::Absolute(a) => a,
            Amount::Share(s) => s * capacity,
        }
    }
}

/// Bytes as the kubelet reports memory: in `Ki` when whole kibibytes.
pub fn bytes(n: u64) -> String {
    if n % 1024 == 0 {
        format!("{}Ki", n / 1024)
    } else {
        n.to_string()
    }
}

/// Millicores as a quantity: whole cores without a suffix.
pub fn millicores(m: u64) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        assert_eq!(parse("100Mi").unwrap(), 100.0 * 1024.0 * 1024.0);
        assert_eq!(parse("250m").unwrap(), 0.25);
        assert_eq!(parse("1.5G").unwrap(), 1.5e9);
        assert_eq!(parse("2e3").unwrap(), 2000.0);
        assert_eq!(parse("3").unwrap(), 3.0);
        assert!(parse("ten").is_err());
        assert!(parse("5Xi").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn shares() {
        assert_eq!(Amount::parse("10%").unwrap(), Amount::Share(0.1));
        assert_eq!(Amount::parse("10%").unwrap().of(1000.0), 100.0);
        assert_eq!(Amount::parse("1Ki").unwrap().of(5.0), 1024.0);
        assert!(Amount::parse("110%").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(bytes(2048), "2Ki");
        assert_eq!(bytes(1000), "1000");
        assert_eq!(millicores(2000), "2");
        assert_eq!(millicores(1900), "1900m");
    }
}
