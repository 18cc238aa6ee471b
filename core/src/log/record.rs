//! Log records and their on-disk frame.
//!
//! Frame (little-endian): `u32 body_len | u32 crc32c(body) | body`, where body is
//! `i64 timestamp_ms | u32 key_len | key | u32 value_len | value | u16 header_count |
//! (u16 name_len | name | u32 value_len | value)*`. CRC-32C (Castagnoli) is the checksum Kafka
//! uses for record batches (KIP-98 message format v2).

use super::LogError;

/// Frame header size: length + CRC.
pub(crate) const FRAME_HEADER: usize = 8;
/// Largest body accepted: 16 MiB.
pub(crate) const MAX_BODY: usize = 16 << 20;

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Partitioning key (e.g. the symbol).
    pub key: Vec<u8>,
    /// Value (JSON on Prism's topics).
    pub value: Vec<u8>,
    /// Headers (name, value), like Kafka record headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Append time, UTC ms.
    pub timestamp_ms: i64,
}

impl NewRecord {
    /// A record with no headers, stamped now.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::stamped(key, value, crate::time::now_ms())
    }

    /// A record with no headers, stamped `timestamp_ms` (UTC ms; one clock read for a batch of
    /// records that arrive together).
    pub fn stamped(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, timestamp_ms: i64) -> Self {
        NewRecord { key: key.into(), value: value.into(), headers: Vec::new(), timestamp_ms }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Append time, UTC ms.
    pub timestamp_ms: i64,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers (name, value).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl LogRecord {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

/// Appends the framed record to `out`.
pub(crate) fn encode(record: &NewRecord, out: &mut Vec<u8>) -> Result<(), LogError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    put_bytes32(out, &record.key)?;
    put_bytes32(out, &record.value)?;
    let count = u16::try_from(record.headers.len()).map_err(|_| LogError::Refused("more than 65535 headers".into()))?;
    out.extend_from_slice(&count.to_le_bytes());
    for (name, value) in &record.headers {
        let len = u16::try_from(name.len()).map_err(|_| LogError::Refused("header name longer than 65535 bytes".into()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        put_bytes32(out, value)?;
    }
    let body_len = out.len() - start - FRAME_HEADER;
    if body_len > MAX_BODY {
        out.truncate(start);
        return Err(LogError::Refused(format!("record of {body_len} bytes exceeds {MAX_BODY}")));
    }
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), LogError> {
    let len = u32::try_from(bytes.len()).map_err(|_| LogError::Refused("field over 4 GiB".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Outcome of looking at the bytes at the start of `buf` as one frame.
pub(crate) enum Frame<'a> {
    /// A whole, CRC-valid frame: its body and total length.
    Valid { body: &'a [u8], len: usize },
    /// Fewer bytes than the frame needs (a torn write at the tail).
    Truncated,
    /// The length is impossible or the CRC does not match.
    Bad(String),
}

pub(crate) fn check_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < FRAME_HEADER {
        return Frame::Truncated;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if !(8 + 4 + 4 + 2..=MAX_BODY).contains(&len) {
        return Frame::Bad(format!("impossible record length {len}"));
    }
    if buf.len() < FRAME_HEADER + len {
        return Frame::Truncated;
    }
    let body = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if crc32c::crc32c(body) != crc {
        return Frame::Bad("CRC-32C mismatch".into());
    }
    Frame::Valid { body, len: FRAME_HEADER + len }
}

/// Decodes a CRC-checked body.
pub(crate) fn decode(body: &[u8], partition: i32, offset: i64) -> Result<LogRecord, LogError> {
    let mut r = Reader { buf: body, at: 0 };
    let corrupt = || LogError::Corrupt(format!("malformed record body at partition {partition} offset {offset}"));
    let timestamp_ms = i64::from_le_bytes(r.take(8).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let key = r.bytes32().ok_or_else(corrupt)?.to_vec();
    let value = r.bytes32().ok_or_else(corrupt)?.to_vec();
    let count = u16::from_le_bytes(r.take(2).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = u16::from_le_bytes(r.take(2).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
        let name = String::from_utf8(r.take(n as usize).ok_or_else(corrupt)?.to_vec()).map_err(|_| corrupt())?;
        let value = r.bytes32().ok_or_else(corrupt)?.to_vec();
        headers.push((name, value));
    }
    Ok(LogRecord { partition, offset, timestamp_ms, key, value, headers })
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.buf.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let rec = NewRecord::new("AAPL", "{}").with_header("h", "v");
        let mut buf = Vec::new();
        encode(&rec, &mut buf).expect("encode");
        match check_frame(&buf) {
            Frame::Valid { body, len } => {
                assert_eq!(len, buf.len());
                let back = decode(body, 3, 7).expect("decode");
                assert_eq!((back.key, back.value, back.headers), (rec.key, rec.value, rec.headers));
            }
            _ => panic!("frame not valid"),
        }
        assert!(matches!(check_frame(&buf[..buf.len() - 1]), Frame::Truncated));
        let last = buf.len() - 1;
        buf[last] ^= 0xff;
        assert!(matches!(check_frame(&buf), Frame::Bad(_)));
    }
}
