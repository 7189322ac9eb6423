//! PORTMAP v2 (RFC 1833 §3) wire formats.

use crate::nfs3_xdr::ArgError;
use crate::xdr::{Decoder, Encoder};

pub const PORTMAP_PROGRAM: u32 = 100000;
pub const PORTMAP_V2: u32 = 2;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;

pub mod procs {
    pub const NULL: u32 = 0;
    pub const SET: u32 = 1;
    pub const UNSET: u32 = 2;
    pub const GETPORT: u32 = 3;
    pub const DUMP: u32 = 4;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub prog: u32,
    pub vers: u32,
    pub prot: u32,
    pub port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmapCall {
    Null,
    Set(Mapping),
    Unset(Mapping),
    Getport(Mapping),
    Dump,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PmapReply {
    Void,
    Bool(bool),
    Port(u32),
    Dump(Vec<Mapping>),
}

fn mapping(d: &mut Decoder) -> crate::xdr::XdrResult<Mapping> {
    Ok(Mapping { prog: d.u32()?, vers: d.u32()?, prot: d.u32()?, port: d.u32()? })
}

/// CALLIT (5) is deliberately unknown: it would make us a reflector.
pub fn decode_call(proc_: u32, args: &[u8]) -> Result<PmapCall, ArgError> {
    let d = &mut Decoder::new(args);
    Ok(match proc_ {
        procs::NULL => PmapCall::Null,
        procs::SET => PmapCall::Set(mapping(d)?),
        procs::UNSET => PmapCall::Unset(mapping(d)?),
        procs::GETPORT => PmapCall::Getport(mapping(d)?),
        procs::DUMP => PmapCall::Dump,
        _ => return Err(ArgError::UnknownProc),
    })
}

pub fn encode_reply(e: &mut Encoder, r: &PmapReply) {
    match r {
        PmapReply::Void => {}
        PmapReply::Bool(b) => e.bool(*b),
        PmapReply::Port(p) => e.u32(*p),
        PmapReply::Dump(list) => {
            for m in list {
                e.bool(true);
                e.u32(m.prog);
                e.u32(m.vers);
                e.u32(m.prot);
                e.u32(m.port);
            }
            e.bool(false);
        }
    }
}
