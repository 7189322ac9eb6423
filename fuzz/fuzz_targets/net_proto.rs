//! Node/fetcher protocol bodies: whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use monofs_net::proto::{Request, Response};

fuzz_target!(|body: &[u8]| {
    if let Ok(r) = Request::decode(body) {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, body, "request re-encodes differently");
    }
    if let Ok(r) = Response::decode(body) {
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, body, "response re-encodes differently");
    }
    if body.len() >= 4 {
        let _ = monofs_net::proto::frame_len(body[..4].try_into().unwrap());
    }
});
