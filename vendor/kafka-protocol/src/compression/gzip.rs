use std::io::Write;

use anyhow::{Context, Result};
use bytes::buf::BufMut;
use bytes::{Bytes, BytesMut};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::protocol::buf::{ByteBuf, ByteBufMut};

use super::{Compressor, Decompressor};

/// Gzip compression algorithm. See [Kafka's broker configuration](https://kafka.apache.org/documentation/#brokerconfigs_compression.type)
/// for more information.
pub struct Gzip;

impl<B: ByteBufMut> Compressor<B> for Gzip {
    type BufMut = BytesMut;
    fn compress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::BufMut) -> Result<R>,
    {
        // Write uncompressed bytes into a temporary buffer
        let mut tmp = BytesMut::new();
        let res = f(&mut tmp)?;

        compress_level(&tmp, DEFAULT_LEVEL, buf)?;
        Ok(res)
    }
}

/// Kafka's `compression.gzip.level` default: zlib's own default (6).
pub(super) const DEFAULT_LEVEL: i32 = -1;

/// Compresses `input` into `buf` at a zlib `level` (1..=9, or -1 for zlib's default).
pub(super) fn compress_level<B: ByteBufMut>(input: &[u8], level: i32, buf: &mut B) -> Result<()> {
    let level = match level {
        DEFAULT_LEVEL => Compression::default(),
        1..=9 => Compression::new(level.unsigned_abs()),
        _ => anyhow::bail!("gzip level {level} is neither -1 nor between 1 and 9"),
    };
    let mut e = GzEncoder::new(buf.writer(), level);
    e.write_all(input).context("Failed to compress gzip")?;
    e.finish().context("Failed to compress gzip")?;
    Ok(())
}

impl<B: ByteBuf> Decompressor<B> for Gzip {
    type Buf = Bytes;
    fn decompress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::Buf) -> Result<R>,
    {
        let compressed = buf.copy_to_bytes(buf.remaining());
        let decoder = MultiGzDecoder::new(compressed.as_ref());
        f(&mut super::read_bounded(decoder, "gzip")?)
    }
}
