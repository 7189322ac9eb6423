//! The INGEST server over TCP.

mod common;

use common::*;
use monofs_fetcher::{start, FetcherConfig};
use monofs_net::client::{Conn, NetError};
use monofs_net::ns::NsEntry;
use monofs_net::oid_hex;
use monofs_net::proto::{IngestRequest, Request, Response};

type Outcome = (Result<NsEntry, String>, Vec<(String, u64, u64)>);

fn ingest_over(conn: &mut Conn, req: IngestRequest) -> Outcome {
    conn.send(&Request::Ingest(req)).unwrap();
    let mut progress = Vec::new();
    loop {
        match conn.recv() {
            Ok(Response::Progress {
                phase,
                objects,
                bytes,
            }) => progress.push((phase, objects, bytes)),
            Ok(Response::IngestDone(e)) => {
                return (Ok(monofs_net::ns::decode(&e).unwrap().remove(0)), progress)
            }
            Err(NetError::Remote { message, .. }) => return (Err(message), progress),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn local_ok(mut cfg: FetcherConfig) -> FetcherConfig {
    cfg.allow_local_sources = true;
    cfg
}

#[test]
fn local_sources_only_when_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let cfg = |dir: &str| FetcherConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join(dir), common::test_key());
    let req = |url: String| IngestRequest {
        kind: monofs_net::proto::SourceKind::Git,
        content: monofs_net::proto::ContentMode::Eager,
        url,
        git_ref: String::new(),
        source_id: String::new(),
        replication: 1,
        nodes: vec![node.node_addr()],
    };
    let urls = [repo.display().to_string(), format!("file://{}", repo.display())];

    // The default: refused before git runs, with the flag named.
    let closed = start(cfg("closed")).unwrap();
    let mut conn = Conn::connect(&closed.local_addr().to_string(), &common::test_key()).unwrap();
    for u in &urls {
        let msg = ingest_over(&mut conn, req(u.clone())).0.unwrap_err();
        assert!(msg.contains("--allow-local-sources"), "{u}: {msg}");
    }
    assert!(
        std::fs::read_dir(tmp.path().join("closed")).unwrap().flatten().all(|e| !e.path().join("objects").exists()),
        "nothing was fetched"
    );
    closed.shutdown();

    let open = start(local_ok(cfg("open"))).unwrap();
    let mut conn = Conn::connect(&open.local_addr().to_string(), &common::test_key()).unwrap();
    let mut paths = Vec::new();
    for u in &urls {
        let e = ingest_over(&mut conn, req(u.clone())).0.unwrap();
        assert!(e.path.starts_with("local/fixture-"), "{u}: {}", e.path);
        paths.push(e.path);
    }
    paths.dedup();
    assert_eq!(paths.len(), 1, "every spelling of one repository is published at one path: {paths:?}");
    open.shutdown();
}

#[test]
fn serves_ingest_with_progress_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture_repo(tmp.path());
    let node = FakeNode::start("solo", false);
    let h = start(local_ok(FetcherConfig::new("127.0.0.1:0".parse().unwrap(), tmp.path().join("cache"), common::test_key())))
    .unwrap();
    let addr = h.local_addr().to_string();
    let mut conn = Conn::connect(&addr, &test_key()).unwrap();
    let req = IngestRequest {
        kind: monofs_net::proto::SourceKind::Git,
        content: monofs_net::proto::ContentMode::Eager,
        url: repo.display().to_string(),
        git_ref: String::new(),
        source_id: String::new(),
        replication: 1,
        nodes: vec![node.node_addr()],
    };
    let (r, progress) = ingest_over(&mut conn, req.clone());
    let e = r.unwrap();
    assert_eq!(e.path, monofs_fetcher::namespace_path(&repo.display().to_string(), "").unwrap());
    assert_eq!(oid_hex(&e.commit), git_str(&repo, &["rev-parse", "HEAD"]));
    assert!(!progress.is_empty(), "progress frames arrive");
    assert_eq!(progress[0].0, "fetching");
    let last = progress.last().unwrap();
    assert_eq!(last.0, "done");
    assert!(last.1 >= 10 && last.2 >= 3 << 20, "{last:?}");

    // Same connection: a missing ref, then a request that is not INGEST.
    let (r, _) = ingest_over(
        &mut conn,
        IngestRequest {
        kind: monofs_net::proto::SourceKind::Git,
        content: monofs_net::proto::ContentMode::Eager,
            git_ref: "nope".into(),
            ..req.clone()
        },
    );
    assert_eq!(
        r.unwrap_err(),
        format!("ref 'nope' not found in {}", repo.display())
    );
    match conn.call(&Request::Hello) {
        Err(NetError::Remote { message, .. }) => {
            assert!(message.contains("only INGEST, FETCH_BLOB and STATUS"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let (r, _) = ingest_over(
        &mut conn,
        IngestRequest {
        kind: monofs_net::proto::SourceKind::Git,
        content: monofs_net::proto::ContentMode::Eager,
            url: tmp.path().join("gone").display().to_string(),
            ..req.clone()
        },
    );
    let msg = r.unwrap_err();
    assert!(
        msg.starts_with("repository '") && msg.contains("could not be fetched: "),
        "{msg}"
    );

    // Several clients at once.
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (addr, req) = (addr.clone(), req.clone());
            std::thread::spawn(move || {
                let mut c = Conn::connect(&addr, &test_key()).unwrap();
                let git_ref = if i == 0 { "other" } else { "main" };
                ingest_over(
                    &mut c,
                    IngestRequest {
        kind: monofs_net::proto::SourceKind::Git,
        content: monofs_net::proto::ContentMode::Eager,
                        git_ref: git_ref.into(),
                        ..req
                    },
                )
                .0
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert!(
            r.is_ok() || r.as_ref().unwrap_err().starts_with("busy"),
            "{r:?}"
        );
    }
    h.shutdown();
    assert!(Conn::connect(&addr, &test_key()).is_err(), "no longer listening");
}
