//! A panic while a router lock is held must not turn every later call into an
//! error: the router runs against a stand-in node over real TCP, threads
//! panic while holding its locks, and the NFS backend calls that take those
//! locks still answer correctly. The same stand-in node shows that a namespace
//! record of before the cluster state keeps its repositories.

use std::sync::{Arc, Mutex};

use monofs_nfs::Backend;

use crate::stand_in_node::{key, repo, start as stand_in_node};
use crate::Router;
use monofs_net::ns::NsEntry;

/// Panic on another thread while holding the lock `which` picks.
fn panic_holding<T: Send + 'static>(r: &Arc<Router>, which: fn(&Router) -> &Mutex<T>) {
    let r = r.clone();
    let joined = std::thread::spawn(move || {
        let _guard = which(&r).lock();
        panic!("injected panic under a router lock");
    })
    .join();
    assert!(joined.is_err());
}

#[test]
fn a_panic_under_a_router_lock_does_not_spread() {
    let router = Arc::new(Router::new(vec![stand_in_node()], 1, vec![], &key()));
    router.publish(repo("github.com/org/one")).unwrap();
    let root = router.mount(b"/").unwrap();
    let (host, _) = router.lookup(&root, b"github.com").unwrap();

    panic_holding(&router, |r| &r.ns_write);
    panic_holding(&router, |r| &r.ns);
    assert!(router.ns.is_poisoned() && router.ns_write.is_poisoned());

    // Every call that takes those locks still answers, and answers right.
    assert_eq!(router.lookup(&root, b"github.com").unwrap().0, host);
    router.publish(repo("github.com/org/two")).unwrap();
    let (org, _) = router.lookup(&host, b"org").unwrap();
    let page = router.readdir(&org, 0, 1 << 16).unwrap();
    let names: Vec<&[u8]> = page.entries.iter().map(|e| e.name.as_slice()).collect();
    assert_eq!(names, [b"one".as_slice(), b"two".as_slice()]);
    assert_eq!(router.mount(b"/github.com/org/two").map(|_| ()), Ok(()));
    assert_eq!(
        router.lookup(&org, b"three").map(|_| ()),
        Err(monofs_nfs::Status::NoEnt)
    );
}

/// A namespace record written before the cluster state (the `N ns` key) still
/// publishes its repositories, stamped 0: a later publish of the same path
/// from the same URL replaces it, and another URL is refused.
#[test]
fn the_namespace_record_of_before_is_kept() {
    let node = stand_in_node();
    let old = repo("github.com/org/old");
    let legacy = monofs_net::ns::encode(std::slice::from_ref(&old)).unwrap();
    let c = monofs_net::client::Cluster::new(vec![node.clone()], 1, &key());
    c.put_batch(vec![(monofs_net::keys::namespace(), legacy)]).unwrap();
    let router = Router::new(vec![node], 1, vec![], &key()).with_id("r1".into());
    assert_eq!(router.repos().unwrap(), vec![old.clone()]);
    let err = router.publish(NsEntry { url: "https://elsewhere".into(), ..old.clone() }).unwrap_err();
    assert!(err.contains("already published from https://github.com/org/old"), "{err}");
    router.publish(NsEntry { commit_time: 7, ..old.clone() }).unwrap();
    router.publish(repo("github.com/org/new")).unwrap();
    let repos = router.repos().unwrap();
    assert_eq!(repos.len(), 2);
    assert_eq!(repos[1].path, "github.com/org/old");
    assert_eq!(repos[1].commit_time, 7, "the state's entry wins over the legacy one");
}
