//! Provides compression utilities for encoding records.
//!
//! This module has implementations of gzip, Snappy, as well as a noop compression format that
//! allows encoding and decoding records into a [`Record`](crate::records::Record).

use crate::protocol::buf::{ByteBuf, ByteBufMut};
use anyhow::Result;

#[cfg(feature = "gzip")]
mod gzip;
#[cfg(feature = "lz4")]
mod lz4;
mod none;
#[cfg(feature = "snappy")]
mod snappy;
#[cfg(feature = "zstd")]
mod zstd;

#[cfg(feature = "gzip")]
pub use gzip::Gzip;
#[cfg(feature = "lz4")]
pub use lz4::Lz4;
pub use none::None;
#[cfg(feature = "snappy")]
pub use snappy::Snappy;
#[cfg(feature = "zstd")]
pub use zstd::Zstd;

/// The most bytes one compressed record batch may decompress to. The compressed bytes come
/// from the network: without a bound, a small gzip, lz4 or zstd batch can expand into
/// gigabytes in memory (a decompression bomb). Producers batch far less than this before
/// compressing.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// Copies a decompressing reader into a buffer, refusing output beyond
/// [`MAX_DECOMPRESSED_BYTES`].
#[cfg(any(feature = "gzip", feature = "lz4", feature = "zstd"))]
fn read_bounded(reader: impl std::io::Read, codec: &str) -> anyhow::Result<bytes::Bytes> {
    use anyhow::Context;
    use bytes::BufMut;

    let limit = MAX_DECOMPRESSED_BYTES as u64;
    let mut out = bytes::BytesMut::new().writer();
    let copied = std::io::copy(&mut reader.take(limit + 1), &mut out)
        .with_context(|| format!("Failed to decompress {codec}"))?;
    if copied > limit {
        anyhow::bail!("{codec} batch decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes");
    }
    Ok(out.into_inner().freeze())
}

/// A trait for record compression algorithms.
pub trait Compressor<B: ByteBufMut> {
    /// Target buffer type for compression.
    type BufMut: ByteBufMut;
    /// Compresses into provided [`ByteBufMut`], with records encoded by `F` into `R`.
    fn compress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::BufMut) -> Result<R>;
}

/// A trait for record decompression algorithms.
pub trait Decompressor<B: ByteBuf> {
    /// Target buffer type for decompression.
    type Buf: ByteBuf;
    /// Decompress records from `B` mapped using `F` into `R`.
    fn decompress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::Buf) -> Result<R>;
}
