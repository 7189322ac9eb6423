//! One authenticated connection to a node or a fetcher.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{NetError, AUTH_FAILURES, CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::auth::{AuthError, AuthStream, FrameError, FrameKey};
use crate::codec::check_len;
use crate::key::ClusterKey;
use crate::proto::{Request, Response};

/// One authenticated connection; requests strictly alternate with responses.
pub struct Conn {
    addr: String,
    stream: AuthStream,
    io_timeout: Duration,
}

impl Conn {
    /// Connect and authenticate with `key` (see `auth`).
    pub fn connect(addr: &str, key: &ClusterKey) -> Result<Conn, NetError> {
        Conn::connect_with(addr, &FrameKey::new(key))
    }

    pub fn connect_with(addr: &str, key: &FrameKey) -> Result<Conn, NetError> {
        let io = |source| NetError::Io { addr: addr.to_string(), source };
        let sa = addr
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(std::io::Error::other("address resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let stream = AuthStream::connect(stream, key).map_err(|source| {
            // A silent peer proved nothing either way: it is a timeout, not an
            // authentication failure.
            if !matches!(source, AuthError::Closed | AuthError::Timeout) {
                AUTH_FAILURES.record("client", addr, &source);
            }
            NetError::Auth { addr: addr.to_string(), source }
        })?;
        Ok(Conn { addr: addr.to_string(), stream, io_timeout: IO_TIMEOUT })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Change how long a send or a wait for a response may take.
    pub fn set_io_timeout(&mut self, t: Duration) -> Result<(), NetError> {
        if t == self.io_timeout {
            return Ok(());
        }
        let io = |source| NetError::Io { addr: self.addr.clone(), source };
        self.stream.get_ref().set_read_timeout(Some(t)).map_err(io)?;
        self.stream.get_ref().set_write_timeout(Some(t)).map_err(io)?;
        self.io_timeout = t;
        Ok(())
    }

    pub fn send(&mut self, req: &Request) -> Result<(), NetError> {
        let mut body = Vec::new();
        req.encode(&mut body);
        check_len("frame body", body.len(), crate::MAX_FRAME)
            .map_err(|source| NetError::Encode { addr: self.addr.clone(), source })?;
        self.stream
            .write_frame(&body)
            .map_err(|source| NetError::Io { addr: self.addr.clone(), source })
    }

    pub fn recv(&mut self) -> Result<Response, NetError> {
        let addr = || self.addr.clone();
        let body = match self.stream.read_frame() {
            Ok(Some(b)) => b,
            Ok(None) => {
                // Closed between frames: the peer sent no byte of this reply.
                let source = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
                return Err(NetError::Io { addr: addr(), source });
            }
            Err(FrameError::Io(source)) => return Err(NetError::Io { addr: addr(), source }),
            Err(FrameError::Header(source)) => return Err(NetError::Decode { addr: addr(), source }),
            Err(FrameError::Auth(source)) => {
                AUTH_FAILURES.record("client", &self.addr, &source);
                return Err(NetError::Auth { addr: addr(), source });
            }
        };
        match Response::decode(&body) {
            Ok(Response::Error(message)) => Err(NetError::Remote { addr: self.addr.clone(), message }),
            Ok(r) => Ok(r),
            Err(source) => Err(NetError::Decode { addr: self.addr.clone(), source }),
        }
    }

    pub fn call(&mut self, req: &Request) -> Result<Response, NetError> {
        self.send(req)?;
        self.recv()
    }

    /// `call`, with `timeout` for the send and for the wait for the response.
    pub fn call_within(&mut self, req: &Request, timeout: Duration) -> Result<Response, NetError> {
        self.set_io_timeout(timeout)?;
        self.call(req)
    }

    pub(crate) fn unexpected(&self, got: &Response) -> NetError {
        NetError::Unexpected { addr: self.addr.clone(), got: format!("{got:?}").chars().take(80).collect() }
    }
}
