//! RFC 1831 §10 record marking over a byte stream: each fragment is a 4-byte header
//! (top bit = last fragment, low 31 bits = length) followed by its bytes.

use std::io::{self, Read};

const LAST_FRAGMENT: u32 = 0x8000_0000;
const FRAGMENT_LEN_MASK: u32 = 0x7fff_ffff;

/// What reading one record produced.
#[derive(Debug)]
pub enum RecordRead {
    Record(Vec<u8>),
    /// Clean end of stream between records.
    Eof,
    /// The record would exceed the limit: the connection must be closed.
    TooLarge,
}

/// Reads one whole record of at most `max` bytes. A stream that ends inside a record is
/// an `UnexpectedEof` error. Memory grows only with bytes actually received, so a huge
/// announced fragment length costs nothing before it is refused.
pub fn read_record<R: Read>(r: &mut R, max: usize) -> io::Result<RecordRead> {
    let mut record = Vec::new();
    let mut first = true;
    loop {
        let mut hdr = [0u8; 4];
        if first {
            // Distinguish a clean close before a record from a torn one.
            match read_full(r, &mut hdr)? {
                0 => return Ok(RecordRead::Eof),
                4 => {}
                _ => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        } else {
            r.read_exact(&mut hdr)?;
        }
        first = false;
        let word = u32::from_be_bytes(hdr);
        let len = (word & FRAGMENT_LEN_MASK) as usize;
        let total = match record.len().checked_add(len) {
            Some(t) if t <= max => t,
            _ => return Ok(RecordRead::TooLarge),
        };
        // Grow with what arrives (read_to_end doubles from a small probe), never to the
        // announced length: a peer announcing 1 MiB and sending 4 bytes costs 4 bytes.
        let got = r.by_ref().take(len as u64).read_to_end(&mut record)?;
        if record.len() != total {
            debug_assert!(got < len);
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if word & LAST_FRAGMENT != 0 {
            return Ok(RecordRead::Record(record));
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Frames a reply as one last fragment. Replies are bounded by max_io plus headers, far
/// below the 2 GiB fragment limit.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(LAST_FRAGMENT | body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(last: bool, data: &[u8]) -> Vec<u8> {
        let mut v = ((data.len() as u32) | if last { LAST_FRAGMENT } else { 0 }).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reassembles_fragments() {
        let mut s = frag(false, b"abc");
        s.extend(frag(false, b""));
        s.extend(frag(true, b"defg"));
        s.extend(frame(b"next"));
        let mut r = &s[..];
        match read_record(&mut r, 100).unwrap() {
            RecordRead::Record(v) => assert_eq!(v, b"abcdefg"),
            other => panic!("{other:?}"),
        }
        match read_record(&mut r, 100).unwrap() {
            RecordRead::Record(v) => assert_eq!(v, b"next"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(read_record(&mut r, 100).unwrap(), RecordRead::Eof));
    }

    #[test]
    fn refuses_oversized_and_truncated() {
        // A fragment announcing 2 GiB with nothing behind it.
        let s = 0xffff_ffffu32.to_be_bytes();
        assert!(matches!(read_record(&mut &s[..], 1 << 20).unwrap(), RecordRead::TooLarge));
        // Fragments that add up beyond the limit.
        let mut s = frag(false, &[0; 60]);
        s.extend(frag(true, &[0; 60]));
        assert!(matches!(read_record(&mut &s[..], 100).unwrap(), RecordRead::TooLarge));
        // Stream ends inside a record.
        let s = frag(true, b"abcdef");
        assert!(read_record(&mut &s[..5], 100).is_err());
        assert!(read_record(&mut &s[..2], 100).is_err());
    }

    /// Hands out `data`, then fails like a socket whose peer went quiet; remembers the
    /// largest buffer it was offered.
    struct Trickle<'a> {
        data: &'a [u8],
        largest_buf: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.largest_buf = self.largest_buf.max(buf.len());
            if self.data.is_empty() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn huge_announced_fragment_allocates_nothing_up_front() {
        // Announces 1 GiB (within the limit), delivers 4 bytes.
        let mut s = (LAST_FRAGMENT | (1 << 30)).to_be_bytes().to_vec();
        s.extend_from_slice(b"abcd");
        let mut r = Trickle { data: &s, largest_buf: 0 };
        let e = read_record(&mut r, 2 << 30).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // The buffers offered to the stream stay at the size of a small probe.
        assert!(r.largest_buf <= 64, "offered a {}-byte buffer for 4 bytes", r.largest_buf);
    }
}
