//! Messages of the node/fetcher protocol and their encoding. A frame on the
//! wire is `u32 body_len` followed by the body; these functions deal in bodies.

use crate::codec::{check_len, DecodeError, EncodeError, Reader, Writer};
use crate::keyset::{BucketDigest, OwnerFilter, DIGEST_BUCKETS};
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
    pub const DIGEST: u8 = 0x06;
    pub const LIST_KEYS: u8 = 0x07;
    pub const STATS: u8 = 0x08;
    pub const OK: u8 = 0x80;
    pub const DATA: u8 = 0x81;
    pub const NOT_FOUND: u8 = 0x82;
    pub const SIZE: u8 = 0x83;
    pub const HELLO_OK: u8 = 0x84;
    pub const DIGEST_OK: u8 = 0x85;
    pub const KEYS: u8 = 0x86;
    pub const SHARD_STATS: u8 = 0x87;
    pub const PROGRESS: u8 = 0x90;
    pub const INGEST_DONE: u8 = 0x91;
    pub const WRONG_SHARD: u8 = 0xFE;
    pub const ERROR: u8 = 0xFF;
}

/// Longest string field (URLs, paths, error messages).
pub const MAX_STRING: usize = 64 << 10;
/// Most nodes named in one INGEST, and most ids in each list of an owner filter.
pub const MAX_NODES: usize = 1024;
/// Most keys in one LIST_KEYS reply (a page).
pub const MAX_LIST_KEYS: usize = 4096;
// A full page of the longest keys fits one frame.
const _: () = assert!(1 + 4 + MAX_LIST_KEYS * (2 + MAX_KEY + 8) + 1 + 2 + MAX_KEY <= MAX_FRAME);

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
    /// `DIGEST_BUCKETS` digests of a shard's keys that match the filter.
    Digest(OwnerFilter),
    /// A page of a shard's matching keys with their value sizes.
    ListKeys(ListKeysRequest),
    /// A shard's totals.
    Stats,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListKeysRequest {
    pub filter: OwnerFilter,
    /// Only keys of this digest bucket; `None`: every bucket.
    pub bucket: Option<u16>,
    /// Resume after this key (the `next` of the previous page); `None`: from the start.
    pub after: Option<Vec<u8>>,
    /// Most keys in the reply, 1 ..= MAX_LIST_KEYS.
    pub limit: u32,
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
    /// Exactly `DIGEST_BUCKETS` buckets.
    Digest(Vec<BucketDigest>),
    /// A page of keys in the shard's order; `next` is where the following page
    /// starts (pass it as `after`), `None` when the listing is complete. A page may
    /// be empty and still have a `next`: the shard bounds the keys it examines.
    Keys { keys: Vec<(Vec<u8>, u64)>, next: Option<Vec<u8>> },
    ShardStats { keys: u64, bytes: u64, damaged: u64, log_bytes: u64 },
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
            Request::Digest(f) => {
                w.u8(op::DIGEST);
                encode_filter(&mut w, f);
            }
            Request::ListKeys(l) => {
                w.u8(op::LIST_KEYS);
                encode_filter(&mut w, &l.filter);
                match l.bucket {
                    Some(b) => w.u8(1).u16(b),
                    None => w.u8(0),
                };
                encode_opt_key(&mut w, l.after.as_deref());
                w.u32(l.limit);
            }
            Request::Stats => {
                w.u8(op::STATS);
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
            op::DIGEST => Request::Digest(decode_filter(&mut r)?),
            op::LIST_KEYS => {
                let filter = decode_filter(&mut r)?;
                let bucket = match r.u8()? {
                    0 => None,
                    1 => match r.u16()? {
                        b if (b as usize) < DIGEST_BUCKETS => Some(b),
                        b => return Err(DecodeError::BadValue(b as u32)),
                    },
                    other => return Err(DecodeError::BadValue(other as u32)),
                };
                let after = decode_opt_key(&mut r)?;
                let limit = r.u32()?;
                if limit == 0 || limit as usize > MAX_LIST_KEYS {
                    return Err(DecodeError::BadValue(limit));
                }
                Request::ListKeys(ListKeysRequest { filter, bucket, after, limit })
            }
            op::STATS => Request::Stats,
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

fn encode_ids(w: &mut Writer, ids: &[String]) {
    assert!(ids.len() <= MAX_NODES);
    w.u32(ids.len() as u32);
    for id in ids {
        w.string(id);
    }
}

fn decode_ids(r: &mut Reader) -> Result<Vec<String>, DecodeError> {
    let n = r.u32()? as usize;
    if n > MAX_NODES {
        return Err(DecodeError::TooLong { len: n, max: MAX_NODES });
    }
    (0..n).map(|_| r.string(MAX_STRING)).collect()
}

/// `u32 n, n × string member, u16 rf, u32 n, n × string include, u32 n, n × string exclude`.
fn encode_filter(w: &mut Writer, f: &OwnerFilter) {
    encode_ids(w, &f.members);
    w.u16(f.rf);
    encode_ids(w, &f.include);
    encode_ids(w, &f.exclude);
}

fn decode_filter(r: &mut Reader) -> Result<OwnerFilter, DecodeError> {
    Ok(OwnerFilter { members: decode_ids(r)?, rf: r.u16()?, include: decode_ids(r)?, exclude: decode_ids(r)? })
}

/// `u8 0`, or `u8 1, bytes16 key`.
fn encode_opt_key(w: &mut Writer, k: Option<&[u8]>) {
    match k {
        Some(k) => w.u8(1).bytes16(k),
        None => w.u8(0),
    };
}

fn decode_opt_key(r: &mut Reader) -> Result<Option<Vec<u8>>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(key(r)?)),
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
            Response::Digest(d) => {
                assert_eq!(d.len(), DIGEST_BUCKETS);
                w.u8(op::DIGEST_OK).u32(d.len() as u32);
                for b in d {
                    w.u64(b.count).u64(b.hash);
                }
            }
            Response::Keys { keys, next } => {
                assert!(keys.len() <= MAX_LIST_KEYS);
                w.u8(op::KEYS).u32(keys.len() as u32);
                for (k, size) in keys {
                    w.bytes16(k).u64(*size);
                }
                encode_opt_key(&mut w, next.as_deref());
            }
            Response::ShardStats { keys, bytes, damaged, log_bytes } => {
                w.u8(op::SHARD_STATS).u64(*keys).u64(*bytes).u64(*damaged).u64(*log_bytes);
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
            op::DIGEST_OK => {
                let n = r.u32()? as usize;
                if n != DIGEST_BUCKETS {
                    return Err(DecodeError::BadValue(n as u32));
                }
                let d = (0..n).map(|_| Ok(BucketDigest { count: r.u64()?, hash: r.u64()? }));
                Response::Digest(d.collect::<Result<_, DecodeError>>()?)
            }
            op::KEYS => {
                let n = r.u32()? as usize;
                if n > MAX_LIST_KEYS {
                    return Err(DecodeError::TooLong { len: n, max: MAX_LIST_KEYS });
                }
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push((key(&mut r)?, r.u64()?));
                }
                Response::Keys { keys, next: decode_opt_key(&mut r)? }
            }
            op::SHARD_STATS => Response::ShardStats {
                keys: r.u64()?,
                bytes: r.u64()?,
                damaged: r.u64()?,
                log_bytes: r.u64()?,
            },
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

    fn filter() -> OwnerFilter {
        OwnerFilter {
            members: vec!["n1".into(), "n2".into(), "n3".into()],
            rf: 2,
            include: vec!["n2".into()],
            exclude: vec!["n3".into()],
        }
    }

    #[test]
    fn anti_entropy_round_trips() {
        rt_req(Request::Digest(filter()));
        rt_req(Request::Digest(OwnerFilter::all()));
        rt_req(Request::Stats);
        rt_req(Request::ListKeys(ListKeysRequest { filter: filter(), bucket: Some(4095), after: None, limit: 1 }));
        rt_req(Request::ListKeys(ListKeysRequest {
            filter: OwnerFilter::all(),
            bucket: None,
            after: Some(b"Tkey".to_vec()),
            limit: MAX_LIST_KEYS as u32,
        }));
        let mut d = vec![BucketDigest::default(); DIGEST_BUCKETS];
        d[7] = BucketDigest { count: 3, hash: 0xdead_beef };
        rt_resp(Response::Digest(d));
        rt_resp(Response::Keys { keys: vec![(b"Ta".to_vec(), 5), (b"Bb".to_vec(), 0)], next: Some(b"Bb".to_vec()) });
        rt_resp(Response::Keys { keys: vec![], next: None });
        rt_resp(Response::ShardStats { keys: 1, bytes: 2, damaged: 3, log_bytes: 4 });
        // A full page of the longest keys is within a frame.
        let keys = (0..MAX_LIST_KEYS).map(|i| (vec![i as u8; MAX_KEY], u64::MAX)).collect();
        let mut b = Vec::new();
        Response::Keys { keys, next: Some(vec![0; MAX_KEY]) }.encode(&mut b);
        assert!(frame(&b).is_ok());
    }

    #[test]
    fn rejects_hostile_anti_entropy_input() {
        let list = |bucket: Option<u16>, limit: u32| {
            let mut b = Vec::new();
            Request::ListKeys(ListKeysRequest { filter: OwnerFilter::all(), bucket, after: None, limit }).encode(&mut b);
            Request::decode(&b)
        };
        assert!(list(Some(4095), 10).is_ok());
        assert!(list(Some(DIGEST_BUCKETS as u16), 10).is_err());
        assert!(list(None, 0).is_err());
        assert!(list(None, MAX_LIST_KEYS as u32 + 1).is_err());
        // More members than MAX_NODES is refused before allocating.
        assert!(Request::decode(&[op::DIGEST, 0xff, 0xff, 0xff, 0xff]).is_err());
        // A digest of the wrong number of buckets.
        let mut b = vec![op::DIGEST_OK, 0, 0, 0, 1];
        b.extend([0u8; 16]);
        assert!(Response::decode(&b).is_err());
        // A page claiming more keys than a page holds.
        assert!(Response::decode(&[op::KEYS, 0xff, 0xff, 0xff, 0xff]).is_err());
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
