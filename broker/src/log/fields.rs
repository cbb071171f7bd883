//! The primitive fields of Kafka's internal record keys and values in their non-flexible
//! versions (`__consumer_offsets`, `__transaction_state`): strings with an `i16` length
//! (-1 for a null one), bytes with an `i32` length, big-endian integers. The getters answer
//! `None` for bytes that end too early or are not UTF-8.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub(crate) fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.put_slice(&s.as_bytes()[..usize::try_from(len).unwrap_or(0)]);
}

pub(crate) fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = usize::try_from(buf.get_i16()).ok()?;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

pub(crate) fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

pub(crate) fn get_nullable_string(buf: &mut Bytes) -> Option<Option<String>> {
    if buf.remaining() < 2 {
        return None;
    }
    if buf.chunk()[..2] == [0xff, 0xff] {
        buf.advance(2);
        return Some(None);
    }
    get_string(buf).map(Some)
}

pub(crate) fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    buf.put_i32(len);
    buf.put_slice(&bytes[..usize::try_from(len).unwrap_or(0)]);
}

/// Bytes with an `i32` length; a negative length (null) reads as empty.
pub(crate) fn get_bytes(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_i32();
    if len < 0 {
        return Some(Bytes::new());
    }
    let len = usize::try_from(len).ok()?;
    if buf.remaining() < len {
        return None;
    }
    Some(buf.split_to(len))
}

pub(crate) fn get_i32(buf: &mut Bytes) -> Option<i32> {
    (buf.remaining() >= 4).then(|| buf.get_i32())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_short_input_is_none() {
        let mut buf = BytesMut::new();
        put_string(&mut buf, "group");
        put_nullable_string(&mut buf, None);
        put_nullable_string(&mut buf, Some("leader"));
        put_bytes(&mut buf, b"assignment");
        buf.put_i32(7);
        let mut bytes = buf.freeze();
        assert_eq!(get_string(&mut bytes).as_deref(), Some("group"));
        assert_eq!(get_nullable_string(&mut bytes), Some(None));
        assert_eq!(
            get_nullable_string(&mut bytes),
            Some(Some("leader".to_string()))
        );
        assert_eq!(get_bytes(&mut bytes).as_deref(), Some(&b"assignment"[..]));
        assert_eq!(get_i32(&mut bytes), Some(7));
        assert_eq!(get_i32(&mut bytes), None);
        let mut short = Bytes::from_static(&[0, 5, b'a']);
        assert_eq!(get_string(&mut short), None);
    }
}
