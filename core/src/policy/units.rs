//! Sizes and durations as people write them: `64K`, `16M`, `1G`; `500ms`, `2s`, `1m`, `1h`.
//! The policy document and the command line read them the same way.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e3)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e3)
    } else {
        return Err(format!(
            "{s:?} needs a unit: ms, s, m or h (e.g. 500ms, 2s)"
        ));
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{s:?} must be a positive duration"));
    }
    Ok(Duration::from_micros((value * unit_ms * 1e3) as u64))
}

/// Parses `65536`, `64K`, `16M`, `1G` (binary multiples; `KiB`, `MiB`, `GiB` also accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let upper = s.to_ascii_uppercase();
    let trimmed = upper.trim_end_matches("IB").trim_end_matches('B');
    let (number, shift) = match trimmed.chars().last() {
        Some('K') => (&trimmed[..trimmed.len() - 1], 10),
        Some('M') => (&trimmed[..trimmed.len() - 1], 20),
        Some('G') => (&trimmed[..trimmed.len() - 1], 30),
        _ => (trimmed, 0),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 65536, 64K, 16M, 1G)"))?;
    value
        .checked_shl(shift)
        .filter(|v| v >> shift == value)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A size in bytes: an integer, or a string such as `"16M"`. Written back as the largest
/// unit that divides it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.0;
        let written = [(30, "G"), (20, "M"), (10, "K")]
            .into_iter()
            .find(|(shift, _)| bytes != 0 && bytes.trailing_zeros() >= *shift)
            .map_or_else(
                || bytes.to_string(),
                |(shift, unit)| format!("{}{unit}", bytes >> shift),
            );
        serializer.serialize_str(&written)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: bytes, or a string such as \"64K\", \"16M\", \"1G\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration: a string such as `"500ms"`, `"30s"`, `"10m"`, `"1h"` (a bare number is
/// refused: its unit would be a guess). Written back in the largest exact unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        let written = [(3_600_000, "h"), (60_000, "m"), (1000, "s")]
            .into_iter()
            .find(|(unit_ms, _)| ms != 0 && ms.is_multiple_of(*unit_ms))
            .map_or_else(
                || format!("{ms}ms"),
                |(unit_ms, unit)| format!("{}{unit}", ms / unit_ms),
            );
        serializer.serialize_str(&written)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpanVisitor;
        impl Visitor<'_> for SpanVisitor {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"30s\", \"10m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                parse_duration(v).map(Span).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(SpanVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_size("16M").unwrap(), 16 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn written_back_in_the_largest_exact_unit() {
        let json = |v: Result<String, serde_json::Error>| v.unwrap();
        assert_eq!(json(serde_json::to_string(&Size(16 << 20))), "\"16M\"");
        assert_eq!(json(serde_json::to_string(&Size(1000))), "\"1000\"");
        let hour = Span(Duration::from_secs(3600));
        assert_eq!(json(serde_json::to_string(&hour)), "\"1h\"");
        let odd = Span(Duration::from_millis(1500));
        assert_eq!(json(serde_json::to_string(&odd)), "\"1500ms\"");
    }
}
