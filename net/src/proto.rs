//! Messages of the node/fetcher protocol and their encoding. A frame on the
//! wire is `u32 body_len` followed by the body; these functions deal in bodies.

use crate::codec::{check_len, DecodeError, EncodeError, Reader, Writer};
use crate::{MAX_BATCH_ITEMS, MAX_FRAME, MAX_KEY};

pub mod op {
    pub const HELLO: u8 = 0x01;
    pub const PUT_BATCH: u8 = 0x02;
    pub const GET: u8 = 0x03;
    pub const STAT: u8 = 0x04;
    pub const INGEST: u8 = 0x10;
    pub const FETCH_BLOB: u8 = 0x11;
    pub const STATUS: u8 = 0x12;
    pub const DAMAGED: u8 = 0x05;
    pub const MERGE_STATE: u8 = 0x20;
    pub const OK: u8 = 0x80;
    pub const DATA: u8 = 0x81;
    pub const NOT_FOUND: u8 = 0x82;
    pub const SIZE: u8 = 0x83;
    pub const HELLO_OK: u8 = 0x84;
    pub const PROGRESS: u8 = 0x90;
    pub const INGEST_DONE: u8 = 0x91;
    pub const WRONG_SHARD: u8 = 0xFE;
    pub const ERROR: u8 = 0xFF;
}

/// Longest string field (URLs, paths, error messages).
pub const MAX_STRING: usize = 64 << 10;
/// Most nodes named in one INGEST.
pub const MAX_NODES: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    pub id: String,
    pub addr: String,
}

/// What an INGEST names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A Git remote; `url` is its URL or a local path.
    Git = 0,
    /// A Go module from the fetcher's GOPROXY; `url` is `module@version` (or `@latest`).
    GoModule = 1,
}

/// When an INGEST answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentMode {
    /// After the directory records are stored: file content follows by
    /// prefetch and on first read.
    Lazy = 0,
    /// After every directory record and every blob is stored.
    Eager = 1,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestRequest {
    pub kind: SourceKind,
    pub content: ContentMode,
    pub url: String,
    /// Branch, tag or commit; empty means the remote's HEAD.
    pub git_ref: String,
    /// Namespace path to publish under; empty means derived from the URL.
    pub source_id: String,
    pub replication: u16,
    pub nodes: Vec<NodeAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Hello,
    PutBatch(Vec<(Vec<u8>, Vec<u8>)>),
    Get { key: Vec<u8>, offset: u64, len: u32 },
    Stat { key: Vec<u8> },
    Ingest(IngestRequest),
    /// Store chunks `first_chunk .. first_chunk + chunks` of a blob of `size`
    /// bytes from the repository at `url` on the blob's owners; OK when durable.
    FetchBlob(FetchBlobRequest),
    /// A fetcher's health and cache figures, answered as DATA holding JSON.
    Status,
    /// A node shard's list of damaged log extents and keys, answered as DATA
    /// holding JSON (bounded: a count plus at most 1000 entries).
    Damaged,
    /// Join an encoded `state::ClusterState` into the node's copy, durably;
    /// answered with DATA holding the joined state.
    MergeState(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchBlobRequest {
    pub kind: SourceKind,
    pub url: String,
    pub oid: crate::Oid,
    pub size: u64,
    pub first_chunk: u32,
    pub chunks: u32,
    pub replication: u16,
    pub nodes: Vec<NodeAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Ok,
    Data(Vec<u8>),
    NotFound,
    Size(u64),
    HelloOk { node_id: String, shards: u16, this_shard: u16 },
    Progress { phase: String, objects: u64, bytes: u64 },
    /// The namespace entries an INGEST publishes, as `ns::encode`d.
    IngestDone(Vec<u8>),
    WrongShard(u16),
    Error(String),
}

fn key(r: &mut Reader) -> Result<Vec<u8>, DecodeError> {
    let k = r.bytes16()?;
    if k.len() > MAX_KEY {
        return Err(DecodeError::TooLong { len: k.len(), max: MAX_KEY });
    }
    Ok(k.to_vec())
}

impl Request {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Request::Hello => {
                w.u8(op::HELLO);
            }
            Request::PutBatch(items) => {
                assert!(items.len() <= MAX_BATCH_ITEMS);
                w.u8(op::PUT_BATCH).u32(items.len() as u32);
                for (k, v) in items {
                    w.bytes16(k).bytes32(v);
                }
            }
            Request::Get { key, offset, len } => {
                w.u8(op::GET).bytes16(key).u64(*offset).u32(*len);
            }
            Request::Stat { key } => {
                w.u8(op::STAT).bytes16(key);
            }
            Request::Ingest(i) => {
                w.u8(op::INGEST)
                    .u8(i.kind as u8)
                    .u8(i.content as u8)
                    .string(&i.url)
                    .string(&i.git_ref)
                    .string(&i.source_id)
                    .u16(i.replication);
                encode_nodes(&mut w, &i.nodes);
            }
            Request::FetchBlob(f) => {
                w.u8(op::FETCH_BLOB)
                    .u8(f.kind as u8)
                    .string(&f.url)
                    .raw(&f.oid)
                    .u64(f.size)
                    .u32(f.first_chunk)
                    .u32(f.chunks)
                    .u16(f.replication);
                encode_nodes(&mut w, &f.nodes);
            }
            Request::Status => {
                w.u8(op::STATUS);
            }
            Request::Damaged => {
                w.u8(op::DAMAGED);
            }
            Request::MergeState(state) => {
                w.u8(op::MERGE_STATE).bytes32(state);
            }
        }
    }

    pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(body);
        let req = match r.u8()? {
            op::HELLO => Request::Hello,
            op::PUT_BATCH => {
                let n = r.u32()? as usize;
                if n > MAX_BATCH_ITEMS {
                    return Err(DecodeError::TooLong { len: n, max: MAX_BATCH_ITEMS });
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = key(&mut r)?;
                    let v = r.bytes32(MAX_FRAME)?.to_vec();
                    items.push((k, v));
                }
                Request::PutBatch(items)
            }
            op::GET => Request::Get { key: key(&mut r)?, offset: r.u64()?, len: r.u32()? },
            op::STAT => Request::Stat { key: key(&mut r)? },
            op::INGEST => {
                let kind = source_kind(r.u8()?)?;
                let content = match r.u8()? {
                    0 => ContentMode::Lazy,
                    1 => ContentMode::Eager,
                    other => return Err(DecodeError::BadValue(other as u32)),
                };
                let url = r.string(MAX_STRING)?;
                let git_ref = r.string(MAX_STRING)?;
                let source_id = r.string(MAX_STRING)?;
                let replication = r.u16()?;
                let nodes = decode_nodes(&mut r)?;
                Request::Ingest(IngestRequest { kind, content, url, git_ref, source_id, replication, nodes })
            }
            op::FETCH_BLOB => Request::FetchBlob(FetchBlobRequest {
                kind: source_kind(r.u8()?)?,
                url: r.string(MAX_STRING)?,
                oid: r.array()?,
                size: r.u64()?,
                first_chunk: r.u32()?,
                chunks: r.u32()?,
                replication: r.u16()?,
                nodes: decode_nodes(&mut r)?,
            }),
            op::STATUS => Request::Status,
            op::DAMAGED => Request::Damaged,
            op::MERGE_STATE => Request::MergeState(r.bytes32(crate::MAX_RECORD)?.to_vec()),
            other => return Err(DecodeError::UnknownOp(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

fn source_kind(b: u8) -> Result<SourceKind, DecodeError> {
    match b {
        0 => Ok(SourceKind::Git),
        1 => Ok(SourceKind::GoModule),
        other => Err(DecodeError::BadValue(other as u32)),
    }
}

fn encode_nodes(w: &mut Writer, nodes: &[NodeAddr]) {
    assert!(nodes.len() <= MAX_NODES);
    w.u32(nodes.len() as u32);
    for n in nodes {
        w.string(&n.id).string(&n.addr);
    }
}

fn decode_nodes(r: &mut Reader) -> Result<Vec<NodeAddr>, DecodeError> {
    let n = r.u32()? as usize;
    if n > MAX_NODES {
        return Err(DecodeError::TooLong { len: n, max: MAX_NODES });
    }
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(NodeAddr { id: r.string(MAX_STRING)?, addr: r.string(MAX_STRING)? });
    }
    Ok(nodes)
}

impl Response {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Response::Ok => {
                w.u8(op::OK);
            }
            Response::Data(d) => {
                w.u8(op::DATA).bytes32(d);
            }
            Response::NotFound => {
                w.u8(op::NOT_FOUND);
            }
            Response::Size(s) => {
                w.u8(op::SIZE).u64(*s);
            }
            Response::HelloOk { node_id, shards, this_shard } => {
                w.u8(op::HELLO_OK).string(node_id).u16(*shards).u16(*this_shard);
            }
            Response::Progress { phase, objects, bytes } => {
                w.u8(op::PROGRESS).string(phase).u64(*objects).u64(*bytes);
            }
            Response::IngestDone(e) => {
                w.u8(op::INGEST_DONE).bytes32(e);
            }
            Response::WrongShard(s) => {
                w.u8(op::WRONG_SHARD).u16(*s);
            }
            Response::Error(m) => {
                w.u8(op::ERROR).string(m);
            }
        }
    }

    pub fn decode(body: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(body);
        let resp = match r.u8()? {
            op::OK => Response::Ok,
            op::DATA => Response::Data(r.bytes32(MAX_FRAME)?.to_vec()),
            op::NOT_FOUND => Response::NotFound,
            op::SIZE => Response::Size(r.u64()?),
            op::HELLO_OK => Response::HelloOk {
                node_id: r.string(MAX_STRING)?,
                shards: r.u16()?,
                this_shard: r.u16()?,
            },
            op::PROGRESS => Response::Progress {
                phase: r.string(MAX_STRING)?,
                objects: r.u64()?,
                bytes: r.u64()?,
            },
            op::INGEST_DONE => Response::IngestDone(r.bytes32(MAX_FRAME)?.to_vec()),
            op::WRONG_SHARD => Response::WrongShard(r.u16()?),
            op::ERROR => Response::Error(r.string(MAX_STRING)?),
            other => return Err(DecodeError::UnknownOp(other)),
        };
        r.finish()?;
        Ok(resp)
    }
}

/// Encoded size of a PUT_BATCH item, for senders cutting batches below MAX_FRAME.
pub fn put_item_size(key: &[u8], value: &[u8]) -> usize {
    2 + key.len() + 4 + value.len()
}

/// Prefix `body` with its length, ready to write; a body over MAX_FRAME, which
/// the peer would refuse, is an error.
pub fn frame(body: &[u8]) -> Result<Vec<u8>, EncodeError> {
    check_len("frame body", body.len(), MAX_FRAME)?;
    let mut f = Vec::with_capacity(4 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    Ok(f)
}

/// Parse a frame header; a length over MAX_FRAME means the peer is broken or
/// hostile and the connection must be closed.
pub fn frame_len(header: [u8; 4]) -> Result<usize, DecodeError> {
    let n = u32::from_be_bytes(header) as usize;
    if n > MAX_FRAME {
        return Err(DecodeError::TooLong { len: n, max: MAX_FRAME });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt_req(r: Request) {
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(Request::decode(&b).unwrap(), r);
        for cut in 0..b.len() {
            assert!(Request::decode(&b[..cut]).is_err(), "truncated at {cut} decoded");
        }
    }

    fn rt_resp(r: Response) {
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(Response::decode(&b).unwrap(), r);
    }

    #[test]
    fn round_trips() {
        rt_req(Request::Hello);
        rt_req(Request::PutBatch(vec![(b"k1".to_vec(), b"v".to_vec()), (b"k2".to_vec(), vec![])]));
        rt_req(Request::Get { key: b"Tabc".to_vec(), offset: 5, len: 9 });
        rt_req(Request::Stat { key: b"x".to_vec() });
        rt_req(Request::Status);
        rt_req(Request::Damaged);
        rt_req(Request::MergeState(vec![1, 0, 0, 0, 0]));
        rt_req(Request::FetchBlob(FetchBlobRequest {
            kind: SourceKind::Git,
            url: "u".into(),
            oid: [4; 20],
            size: 5,
            first_chunk: 1,
            chunks: 2,
            replication: 1,
            nodes: vec![NodeAddr { id: "n1".into(), addr: "a:1".into() }],
        }));
        rt_req(Request::Ingest(IngestRequest {
            kind: SourceKind::GoModule,
            content: ContentMode::Eager,
            url: "file:///x".into(),
            git_ref: "main".into(),
            source_id: "".into(),
            replication: 2,
            nodes: vec![NodeAddr { id: "n1".into(), addr: "127.0.0.1:1".into() }],
        }));
        rt_resp(Response::Ok);
        rt_resp(Response::Data(vec![1, 2, 3]));
        rt_resp(Response::NotFound);
        rt_resp(Response::Size(77));
        rt_resp(Response::HelloOk { node_id: "n".into(), shards: 4, this_shard: 1 });
        rt_resp(Response::Progress { phase: "p".into(), objects: 1, bytes: 2 });
        rt_resp(Response::IngestDone(vec![9]));
        rt_resp(Response::WrongShard(3));
        rt_resp(Response::Error("bad".into()));
    }

    #[test]
    fn rejects_hostile_input() {
        assert!(Request::decode(&[]).is_err());
        assert!(Request::decode(&[0x77]).is_err());
        assert!(Request::decode(&[op::HELLO, 0]).is_err());
        // A batch claiming more items than allowed is refused before allocating.
        assert!(Request::decode(&[op::PUT_BATCH, 0xff, 0xff, 0xff, 0xff]).is_err());
        // An over-long key.
        let mut b = vec![op::STAT, 0, 200];
        b.extend(vec![0u8; 200]);
        assert!(Request::decode(&b).is_err());
        assert!(frame_len(u32::MAX.to_be_bytes()).is_err());
        assert!(frame(&vec![0; MAX_FRAME + 1]).is_err());
        assert_eq!(frame(&[7]).unwrap(), [0, 0, 0, 1, 7]);
    }
}
