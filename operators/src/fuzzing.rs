//! Entry points for the fuzz targets in `fuzz/` (and the corpus replay tests): the input
//! agreement's messages, which every rank receives from its peers.

/// Rank 0's listing and a rank's share report, decoded as `agree` decodes them.
pub fn agree(data: &[u8]) {
    let _ = crate::inputs::Listing::from_bytes(data);
    let _ = crate::inputs::ShareReport::from_bytes(data);
}
