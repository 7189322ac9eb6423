//! Big-endian field encoding shared by every message and record format.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated input: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("field too long: {len} > {max}")]
    TooLong { len: usize, max: usize },
    #[error("invalid UTF-8 in string field")]
    Utf8,
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOp(u8),
    #[error("invalid value {0}")]
    BadValue(u32),
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
}

/// A value that cannot be encoded within the format's limits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("{what} too long: {len} > {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
}

/// `Err(TooLong)` when `len` is over `max`.
pub fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::TooLong { what, len, max });
    }
    Ok(())
}

pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    pub fn bytes16(&mut self, v: &[u8]) -> &mut Self {
        assert!(v.len() <= u16::MAX as usize, "bytes16 field over 64 KiB");
        self.u16(v.len() as u16).raw(v)
    }
    pub fn bytes32(&mut self, v: &[u8]) -> &mut Self {
        assert!(v.len() <= u32::MAX as usize);
        self.u32(v.len() as u32).raw(v)
    }
    pub fn string(&mut self, v: &str) -> &mut Self {
        self.bytes32(v.as_bytes())
    }
}

/// A cursor over untrusted input: every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { needed: n - self.buf.len() });
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.raw(N)?.try_into().expect("length checked"))
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.raw(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    pub fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.raw(n)
    }
    pub fn bytes32(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong { len: n, max });
        }
        self.raw(n)
    }
    pub fn string(&mut self, max: usize) -> Result<String, DecodeError> {
        let b = self.bytes32(max)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}
