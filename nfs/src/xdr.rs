//! XDR (RFC 4506) primitives: big-endian 4-byte units, opaques padded to 4.
//! Decoding never panics: every read is bounds-checked and every variable length is
//! checked against both a caller's maximum and the bytes actually left.

/// The input did not decode as the XDR the caller expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdrError;

pub type XdrResult<T> = Result<T, XdrError>;

/// Bytes of padding after `len` bytes of opaque data.
pub fn pad(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Encoded size of a variable-length opaque of `len` bytes (length word + data + pad).
pub fn opaque_size(len: usize) -> usize {
    4 + len + pad(len)
}

pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes not yet decoded (a call's arguments after its header).
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(XdrError);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u32(&mut self) -> XdrResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> XdrResult<u64> {
        let hi = self.u32()? as u64;
        let lo = self.u32()? as u64;
        Ok(hi << 32 | lo)
    }

    /// XDR bool is exactly 0 or 1; anything else is malformed.
    pub fn bool(&mut self) -> XdrResult<bool> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(XdrError),
        }
    }

    /// Fixed-length opaque of `n` bytes plus its padding.
    pub fn fixed(&mut self, n: usize) -> XdrResult<&'a [u8]> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    pub fn fixed8(&mut self) -> XdrResult<[u8; 8]> {
        let b = self.fixed(8)?;
        let mut out = [0u8; 8];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// Variable-length opaque of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> XdrResult<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(XdrError);
        }
        self.fixed(len)
    }
}

#[derive(Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder { buf: Vec::new() }
    }

    pub fn with_capacity(n: usize) -> Self {
        Encoder { buf: Vec::with_capacity(n) }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u32(v as u32);
    }

    pub fn fixed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(&[0u8; 3][..pad(data.len())]);
    }

    /// Variable-length opaque. Callers only pass lengths already bounded far below u32::MAX
    /// (handles, names, reads capped at max_io), so the cast cannot truncate.
    pub fn opaque(&mut self, data: &[u8]) {
        self.u32(data.len() as u32);
        self.fixed(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_primitives() {
        let mut e = Encoder::new();
        e.u32(7);
        e.u64(0x0102_0304_0506_0708);
        e.bool(true);
        e.opaque(b"abcde");
        e.fixed(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let bytes = e.into_inner();
        assert_eq!(bytes.len(), 4 + 8 + 4 + 12 + 8);
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u32(), Ok(7));
        assert_eq!(d.u64(), Ok(0x0102_0304_0506_0708));
        assert_eq!(d.bool(), Ok(true));
        assert_eq!(d.opaque(16), Ok(&b"abcde"[..]));
        assert_eq!(d.fixed8(), Ok([1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(d.remaining(), 0);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(Decoder::new(&[0, 0, 1]).u32(), Err(XdrError));
        assert_eq!(Decoder::new(&[0, 0, 0, 2]).bool(), Err(XdrError));
        // Length beyond the caller's maximum.
        assert_eq!(Decoder::new(&[0, 0, 0, 9, 0, 0, 0, 0]).opaque(8), Err(XdrError));
        // Length beyond the bytes present (huge length must not allocate or panic).
        assert_eq!(Decoder::new(&[0xff, 0xff, 0xff, 0xff, 1]).opaque(usize::MAX), Err(XdrError));
        // Missing padding.
        assert_eq!(Decoder::new(&[0, 0, 0, 1, b'a']).opaque(8), Err(XdrError));
    }
}
