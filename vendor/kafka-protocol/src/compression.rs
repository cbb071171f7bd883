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

/// Compresses `input` (a batch's encoded records) into `out` with `compression` at `level`,
/// as Kafka's `compression.gzip.level` (-1 or 1..=9), `compression.lz4.level` (1..=17) and
/// `compression.zstd.level` (-131072..=22) mean it; `None` takes the level this crate's
/// encoder uses. Snappy and no compression have no levels and ignore it.
pub fn compress_with_level(
    compression: crate::records::Compression,
    level: Option<i32>,
    input: &[u8],
    out: &mut bytes::BytesMut,
) -> Result<()> {
    use crate::records::Compression as C;
    match compression {
        C::None => {
            bytes::BufMut::put_slice(out, input);
            Ok(())
        }
        #[cfg(feature = "gzip")]
        C::Gzip => gzip::compress_level(input, level.unwrap_or(gzip::DEFAULT_LEVEL), out),
        #[cfg(feature = "snappy")]
        C::Snappy => <Snappy as Compressor<bytes::BytesMut>>::compress(out, |tmp| {
            bytes::BufMut::put_slice(tmp, input);
            Ok(())
        }),
        #[cfg(feature = "lz4")]
        C::Lz4 => {
            let level = level.unwrap_or(lz4::COMPRESSION_LEVEL as i32);
            let level = u32::try_from(level)
                .ok()
                .filter(|level| (1..=17).contains(level))
                .ok_or_else(|| anyhow::anyhow!("lz4 level {level} is not between 1 and 17"))?;
            lz4::compress_level(input, level, out)
        }
        #[cfg(feature = "zstd")]
        C::Zstd => {
            let level = level.unwrap_or(zstd::COMPRESSION_LEVEL);
            if !(-131072..=22).contains(&level) {
                anyhow::bail!("zstd level {level} is not between -131072 and 22");
            }
            zstd::compress_level(input, level, out)
        }
        #[allow(unreachable_patterns)]
        c => anyhow::bail!("Support for {c:?} is not enabled as a cargo feature"),
    }
}

/// Decompresses the records of one batch compressed with `compression`; gzip, lz4 and zstd
/// stop at [`MAX_DECOMPRESSED_BYTES`] of output.
pub fn decompress(
    compression: crate::records::Compression,
    mut input: bytes::Bytes,
) -> Result<bytes::Bytes> {
    use crate::records::Compression as C;
    let take = |out: &mut bytes::Bytes| Ok(std::mem::take(out));
    match compression {
        C::None => Ok(input),
        #[cfg(feature = "gzip")]
        C::Gzip => Gzip::decompress(&mut input, take),
        #[cfg(feature = "snappy")]
        C::Snappy => Snappy::decompress(&mut input, take),
        #[cfg(feature = "lz4")]
        C::Lz4 => Lz4::decompress(&mut input, take),
        #[cfg(feature = "zstd")]
        C::Zstd => Zstd::decompress(&mut input, take),
        #[allow(unreachable_patterns)]
        c => anyhow::bail!("Support for {c:?} is not enabled as a cargo feature"),
    }
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
