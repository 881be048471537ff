//! Byte layout of the record file; knows nothing about what a record means.
//!
//! ```text
//! file   := header record*
//! header := "PAXSQLOG" (8 bytes) | format version (u32 LE)
//! record := payload length (u32 LE) | crc32c(payload) (u32 LE) | payload
//! ```

use serde::Serialize;

use crate::error::LogError;

/// The first bytes of every paxsql log file.
pub const MAGIC: [u8; 8] = *b"PAXSQLOG";
/// The record format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the file header: magic then version.
pub const FILE_HEADER_LEN: usize = MAGIC.len() + 4;
/// Length of a record's frame header: payload length then checksum.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload accepted, written or read. A length field above it is garbage, not a
/// record, so a torn length is never trusted to allocate or skip gigabytes.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// The header a new file starts with.
pub(crate) fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut header = [0; FILE_HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// What the start of an existing file says.
#[derive(Debug, PartialEq)]
pub(crate) enum Header {
    /// A complete, supported header: records follow at [`FILE_HEADER_LEN`].
    Valid,
    /// Empty, or a strict prefix of the header: a crash while the file was being created.
    /// Nothing was ever recorded in it.
    Missing,
}

/// Classifies the start of a file; a foreign file or another version is an error.
pub(crate) fn read_file_header(bytes: &[u8]) -> Result<Header, LogError> {
    let expected = file_header();
    if bytes.len() < FILE_HEADER_LEN && expected.starts_with(bytes) {
        return Ok(Header::Missing);
    }
    let magic_len = MAGIC.len().min(bytes.len());
    if bytes[..magic_len] != MAGIC[..magic_len] || bytes.len() < FILE_HEADER_LEN {
        return Err(LogError::NotAPaxsqlLog {
            found: bytes[..magic_len].to_vec(),
            expected: MAGIC.to_vec(),
        });
    }
    let version = read_u32(bytes, MAGIC.len());
    if version != FORMAT_VERSION {
        return Err(LogError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(Header::Valid)
}

/// Encodes `payload` with postcard and frames it as one record.
pub(crate) fn encode_record<P: Serialize + ?Sized>(payload: &P) -> Result<Vec<u8>, LogError> {
    let mut frame =
        postcard::to_extend(payload, vec![0; FRAME_HEADER_LEN]).map_err(LogError::Encode)?;
    let len = frame.len() - FRAME_HEADER_LEN;
    assert!(len > 0, "an empty payload would read back as damage");
    if len > MAX_RECORD_BYTES {
        return Err(LogError::RecordTooLarge {
            len,
            max: MAX_RECORD_BYTES,
        });
    }
    let crc = crc32c::crc32c(&frame[FRAME_HEADER_LEN..]);
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    frame[4..FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

/// What lies at an offset of the file.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame<'a> {
    /// A record whose checksum matches; the next one starts at `next`.
    Record { payload: &'a [u8], next: usize },
    /// The end of the file, exactly at a record boundary.
    End,
    /// Bytes that are not a whole, intact record.
    Damaged(&'static str),
}

/// Reads the record starting at `offset` of `bytes`.
pub(crate) fn read_record(bytes: &[u8], offset: usize) -> Frame<'_> {
    assert!(offset <= bytes.len());
    let rest = &bytes[offset..];
    if rest.is_empty() {
        return Frame::End;
    }
    if rest.len() < FRAME_HEADER_LEN {
        return Frame::Damaged("short record header");
    }
    let len = read_u32(rest, 0) as usize;
    let crc = read_u32(rest, 4);
    if len > MAX_RECORD_BYTES {
        return Frame::Damaged("record length over the limit");
    }
    // No record has an empty payload (an encoded op list is at least its length byte), and
    // an all-zero header would otherwise pass: the crc32c of nothing is 0. Zero-filled
    // tails are what some file systems show after a crash.
    if len == 0 {
        return Frame::Damaged("zero-length record");
    }
    let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Frame::Damaged("short record payload");
    };
    if crc32c::crc32c(payload) != crc {
        return Frame::Damaged("record checksum mismatch");
    }
    Frame::Record {
        payload,
        next: offset + FRAME_HEADER_LEN + len,
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_ends_at_the_boundary() {
        let frame = encode_record(&(7u32, "abc")).unwrap();
        let Frame::Record { payload, next } = read_record(&frame, 0) else {
            panic!("record not read back");
        };
        assert_eq!(next, frame.len());
        assert_eq!(
            postcard::from_bytes::<(u32, &str)>(payload).unwrap(),
            (7, "abc")
        );
        assert_eq!(read_record(&frame, next), Frame::End);
    }

    #[test]
    fn every_strict_prefix_of_a_record_is_damaged() {
        let frame = encode_record(&vec![1u8; 40]).unwrap();
        for cut in 1..frame.len() {
            assert!(matches!(read_record(&frame[..cut], 0), Frame::Damaged(_)));
        }
    }

    #[test]
    fn zeros_are_not_a_record() {
        for n in 0..64 {
            let zeros = vec![0u8; n];
            let frame = read_record(&zeros, 0);
            assert!(
                n == 0 || matches!(frame, Frame::Damaged(_)),
                "{n} zeros: {frame:?}"
            );
        }
    }

    #[test]
    fn a_garbage_length_is_not_trusted() {
        let mut frame = encode_record(&5u8).unwrap();
        frame[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            read_record(&frame, 0),
            Frame::Damaged("record length over the limit")
        );
    }

    #[test]
    fn header_prefixes_are_missing_and_foreign_files_are_errors() {
        let header = file_header();
        for cut in 0..FILE_HEADER_LEN {
            assert_eq!(read_file_header(&header[..cut]).unwrap(), Header::Missing);
        }
        assert_eq!(read_file_header(&header).unwrap(), Header::Valid);
        assert!(matches!(
            read_file_header(b"SQLite format 3\0"),
            Err(LogError::NotAPaxsqlLog { .. })
        ));
        assert!(matches!(read_file_header(b"PAX"), Ok(Header::Missing)));
        assert!(matches!(
            read_file_header(b"PAXSQLOG\x02\0\0\0"),
            Err(LogError::UnsupportedVersion { found: 2, .. })
        ));
    }
}
