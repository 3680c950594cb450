//! Entry points for the fuzz targets in `fuzz/` (and the corpus replay tests): arbitrary bytes
//! in, no panic and no hang out.

/// A pipeline file's text, read and validated as `updraft validate` reads it.
pub fn pipeline(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::parse_pipeline(text, "fuzz.toml");
    }
}

/// An expression, parsed as a filter or a derived column is.
pub fn expr(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::expr::parse_expr(text);
    }
}
