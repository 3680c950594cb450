//! Quantities with units, as written in config files: sizes (`"8MiB"`) and durations (`"250ms"`).

use std::time::Duration;

/// Parses a byte size such as `"8MiB"`, `"64 KiB"`, `"1GB"` or `"4096"`.
///
/// # Errors
/// A message naming the accepted forms when `text` is not a size.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("`{text}` is not a size; write e.g. \"8MiB\", \"512KiB\" or \"4096\""))
}

/// Parses a duration such as `"250ms"`, `"10s"` or `"2m"`.
///
/// # Errors
/// A message naming the accepted forms when `text` is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("`{text}` is not a duration; write e.g. \"250ms\", \"10s\" or \"2m\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes(" 1 KiB "), Ok(1024));
        assert!(parse_bytes("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }
}
