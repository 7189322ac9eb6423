//! ONC RPC v2 message headers (RFC 1831 §8-9): decoding a CALL, encoding every REPLY.
//! AUTH_NONE and AUTH_SYS credentials are decoded here; what they grant is decided by
//! the export rules (`exports`, `permission`), and the backend sees no identities.

use crate::limits::{AUTH_UNIX_MAX_GIDS, AUTH_UNIX_MAX_MACHINENAME, MAX_AUTH_BYTES};
use crate::xdr::{Decoder, Encoder};

pub const RPC_VERSION: u32 = 2;
const MSG_CALL: u32 = 0;
const MSG_REPLY: u32 = 1;
const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;
const REJECT_RPC_MISMATCH: u32 = 0;
const REJECT_AUTH_ERROR: u32 = 1;

pub const AUTH_NONE: u32 = 0;
pub const AUTH_UNIX: u32 = 1;

/// RFC 1831 auth_stat values we send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthStat {
    BadCred = 1,
}

/// RFC 1831 accept_stat for replies that carry no procedure results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptStat {
    ProgUnavail = 1,
    ProcUnavail = 3,
    GarbageArgs = 4,
    SystemErr = 5,
}
const ACCEPT_SUCCESS: u32 = 0;
const ACCEPT_PROG_MISMATCH: u32 = 2;

/// A decoded CALL header; the procedure's arguments follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallHeader {
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub auth: Auth,
}

/// The caller's credential as sent (RFC 1831 §9.1-9.2), before any squashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    /// authsys_parms without the stamp and machine name, which grant nothing.
    Sys { uid: u32, gid: u32, gids: Vec<u32> },
}

/// Why a record did not yield a dispatchable call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not even a complete header: nothing sensible to answer, drop the connection.
    Malformed,
    /// A REPLY (or other non-CALL) sent to a server: ignore it.
    NotACall,
    /// rpcvers != 2: answer MSG_DENIED/RPC_MISMATCH.
    RpcMismatch { xid: u32 },
    /// Unsupported or malformed credential: answer MSG_DENIED/AUTH_ERROR.
    Auth { xid: u32, stat: AuthStat },
}

/// Splits a record into its CALL header and argument bytes.
pub fn decode_call(record: &[u8]) -> Result<(CallHeader, &[u8]), HeaderError> {
    let mut d = Decoder::new(record);
    let xid = d.u32().map_err(|_| HeaderError::Malformed)?;
    let mtype = d.u32().map_err(|_| HeaderError::Malformed)?;
    if mtype != MSG_CALL {
        return Err(if mtype == MSG_REPLY { HeaderError::NotACall } else { HeaderError::Malformed });
    }
    let rpcvers = d.u32().map_err(|_| HeaderError::Malformed)?;
    if rpcvers != RPC_VERSION {
        // The rest of the header may not even be laid out as v2; don't read it.
        return Err(HeaderError::RpcMismatch { xid });
    }
    let prog = d.u32().map_err(|_| HeaderError::Malformed)?;
    let vers = d.u32().map_err(|_| HeaderError::Malformed)?;
    let proc_ = d.u32().map_err(|_| HeaderError::Malformed)?;
    let cred_flavor = d.u32().map_err(|_| HeaderError::Malformed)?;
    let cred_len = d.u32().map_err(|_| HeaderError::Malformed)? as usize;
    let bad_cred = HeaderError::Auth { xid, stat: AuthStat::BadCred };
    if cred_len > MAX_AUTH_BYTES {
        return Err(bad_cred);
    }
    let cred_body = d.fixed(cred_len).map_err(|_| HeaderError::Malformed)?;
    let verf_flavor = d.u32().map_err(|_| HeaderError::Malformed)?;
    let verf_len = d.u32().map_err(|_| HeaderError::Malformed)? as usize;
    if verf_len > MAX_AUTH_BYTES {
        return Err(bad_cred);
    }
    d.fixed(verf_len).map_err(|_| HeaderError::Malformed)?;
    let auth = match cred_flavor {
        AUTH_NONE => Some(Auth::None),
        AUTH_UNIX => auth_sys(cred_body),
        _ => None,
    };
    // AUTH_NONE and AUTH_UNIX calls carry an AUTH_NONE verifier (RFC 1831 §9.1-9.2);
    // tolerate any body length within the bound as Linux knfsd does.
    match auth {
        Some(auth) if verf_flavor == AUTH_NONE => Ok((CallHeader { xid, prog, vers, proc_, auth }, d.rest())),
        _ => Err(bad_cred),
    }
}

/// RFC 1831 Appendix A authsys_parms, which must fill its body exactly.
fn auth_sys(body: &[u8]) -> Option<Auth> {
    let mut d = Decoder::new(body);
    let auth = (|| {
        d.u32()?; // stamp
        d.opaque(AUTH_UNIX_MAX_MACHINENAME)?;
        let uid = d.u32()?;
        let gid = d.u32()?;
        let n = d.u32()? as usize;
        if n > AUTH_UNIX_MAX_GIDS {
            return Err(crate::xdr::XdrError);
        }
        let gids = (0..n).map(|_| d.u32()).collect::<Result<Vec<_>, _>>()?;
        Ok::<Auth, crate::xdr::XdrError>(Auth::Sys { uid, gid, gids })
    })();
    auth.ok().filter(|_| d.remaining() == 0)
}

fn accepted_header(xid: u32, e: &mut Encoder) {
    e.u32(xid);
    e.u32(MSG_REPLY);
    e.u32(MSG_ACCEPTED);
    // Verifier: AUTH_NONE, empty body.
    e.u32(AUTH_NONE);
    e.u32(0);
}

/// A SUCCESS reply header; the caller appends the procedure's results.
pub fn success(xid: u32, capacity: usize) -> Encoder {
    let mut e = Encoder::with_capacity(capacity + 24);
    accepted_header(xid, &mut e);
    e.u32(ACCEPT_SUCCESS);
    e
}

pub fn accept_error(xid: u32, stat: AcceptStat) -> Vec<u8> {
    let mut e = Encoder::with_capacity(24);
    accepted_header(xid, &mut e);
    e.u32(stat as u32);
    e.into_inner()
}

pub fn prog_mismatch(xid: u32, low: u32, high: u32) -> Vec<u8> {
    let mut e = Encoder::with_capacity(32);
    accepted_header(xid, &mut e);
    e.u32(ACCEPT_PROG_MISMATCH);
    e.u32(low);
    e.u32(high);
    e.into_inner()
}

pub fn rpc_mismatch(xid: u32) -> Vec<u8> {
    let mut e = Encoder::with_capacity(20);
    e.u32(xid);
    e.u32(MSG_REPLY);
    e.u32(MSG_DENIED);
    e.u32(REJECT_RPC_MISMATCH);
    e.u32(RPC_VERSION);
    e.u32(RPC_VERSION);
    e.into_inner()
}

pub fn auth_error(xid: u32, stat: AuthStat) -> Vec<u8> {
    let mut e = Encoder::with_capacity(16);
    e.u32(xid);
    e.u32(MSG_REPLY);
    e.u32(MSG_DENIED);
    e.u32(REJECT_AUTH_ERROR);
    e.u32(stat as u32);
    e.into_inner()
}

/// Builds a CALL header (used by tests and by nothing on the serving path).
#[cfg(test)]
pub fn encode_call(xid: u32, prog: u32, vers: u32, proc_: u32) -> Encoder {
    let mut e = Encoder::new();
    e.u32(xid);
    e.u32(MSG_CALL);
    e.u32(RPC_VERSION);
    e.u32(prog);
    e.u32(vers);
    e.u32(proc_);
    e.u32(AUTH_NONE);
    e.u32(0);
    e.u32(AUTH_NONE);
    e.u32(0);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_unix_call(gids: u32, extra: bool) -> Vec<u8> {
        let mut body = Encoder::new();
        body.u32(1234);
        body.opaque(b"client");
        body.u32(1000);
        body.u32(1000);
        body.u32(gids);
        for g in 0..gids {
            body.u32(g);
        }
        if extra {
            body.u32(0);
        }
        let body = body.into_inner();
        let mut e = Encoder::new();
        for v in [9, MSG_CALL, RPC_VERSION, 100003, 3, 0, AUTH_UNIX] {
            e.u32(v);
        }
        e.opaque(&body);
        e.u32(AUTH_NONE);
        e.u32(0);
        e.into_inner()
    }

    #[test]
    fn decodes_auth_none_and_unix() {
        let rec = encode_call(5, 100003, 3, 1).into_inner();
        let (h, args) = decode_call(&rec).unwrap();
        assert_eq!((h.xid, h.prog, h.vers, h.proc_), (5, 100003, 3, 1));
        assert!(args.is_empty());
        assert_eq!(h.auth, Auth::None);
        let rec = auth_unix_call(3, false);
        assert_eq!(decode_call(&rec).unwrap().0.auth, Auth::Sys { uid: 1000, gid: 1000, gids: vec![0, 1, 2] });
    }

    #[test]
    fn rejects_bad_credentials() {
        let bad = HeaderError::Auth { xid: 9, stat: AuthStat::BadCred };
        assert_eq!(decode_call(&auth_unix_call(17, false)).unwrap_err(), bad);
        assert_eq!(decode_call(&auth_unix_call(1, true)).unwrap_err(), bad);
        let mut e = Encoder::new();
        for v in [9, MSG_CALL, RPC_VERSION, 100003, 3, 0, AUTH_NONE, 401] {
            e.u32(v);
        }
        assert_eq!(decode_call(&e.into_inner()).unwrap_err(), bad);
    }

    #[test]
    fn truncated_and_wrong_version() {
        let rec = encode_call(5, 100003, 3, 1).into_inner();
        for n in 0..rec.len() {
            let r = decode_call(&rec[..n]);
            assert!(r.is_err(), "prefix {n} decoded");
        }
        let mut e = Encoder::new();
        for v in [77, MSG_CALL, 3] {
            e.u32(v);
        }
        assert_eq!(decode_call(&e.into_inner()).unwrap_err(), HeaderError::RpcMismatch { xid: 77 });
        let mut e = Encoder::new();
        e.u32(1);
        e.u32(MSG_REPLY);
        assert_eq!(decode_call(&e.into_inner()).unwrap_err(), HeaderError::NotACall);
    }
}
