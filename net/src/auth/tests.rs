use super::*;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;

fn key(b: u8) -> FrameKey {
    FrameKey::new(&ClusterKey::from_bytes([b; KEY_LEN]))
}

/// What the server of one connection saw: the frames it accepted (each echoed back)
/// and how the connection ended.
struct Seen {
    frames: Vec<Vec<u8>>,
    end: Result<(), String>,
}

/// Accepts one connection with `k`, echoes verified frames until EOF or an error.
fn echo_server(k: FrameKey) -> (SocketAddr, JoinHandle<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut frames = Vec::new();
        let mut conn = match AuthStream::accept(s, &k) {
            Ok(c) => c,
            Err(e) => return Seen { frames, end: Err(e.to_string()) },
        };
        let end = loop {
            match conn.read_frame() {
                Ok(Some(f)) => {
                    conn.write_frame(&f).unwrap();
                    frames.push(f);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        Seen { frames, end }
    });
    (addr, h)
}

/// A client that does the handshake by hand and keeps the raw socket, to send
/// frames an honest client never would.
fn raw_client(addr: SocketAddr, k: &FrameKey) -> (TcpStream, Session, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let (hs, hello) = ClientHandshake::start(k);
    s.write_all(&hello).unwrap();
    let mut answer = [0u8; SERVER_HELLO_LEN];
    s.read_exact(&mut answer).unwrap();
    let fin = hs.finish(&answer);
    let proof = fin.proof.unwrap();
    s.write_all(&proof).unwrap();
    let mut sent = hello.to_vec();
    sent.extend_from_slice(&proof);
    (s, fin.session.unwrap(), sent)
}

fn sealed(session: &mut Session, body: &[u8]) -> Vec<u8> {
    let hdr = (body.len() as u32).to_be_bytes();
    let mac = session.seal(&[&hdr, body]);
    [&hdr[..], body, &mac].concat()
}

#[test]
fn frames_round_trip_both_ways() {
    let (addr, server) = echo_server(key(1));
    let mut c = AuthStream::connect(TcpStream::connect(addr).unwrap(), &key(1)).unwrap();
    for body in [&b"first"[..], b"", &[7u8; 100_000]] {
        c.write_frame(body).unwrap();
        assert_eq!(c.read_frame().unwrap().unwrap(), body);
    }
    drop(c);
    let seen = server.join().unwrap();
    assert_eq!(seen.frames.len(), 3);
    assert_eq!(seen.end, Ok(()));
}

#[test]
fn wrong_key_fails_on_both_sides() {
    let (addr, server) = echo_server(key(1));
    let err = AuthStream::connect(TcpStream::connect(addr).unwrap(), &key(2)).err().unwrap();
    assert!(matches!(err, AuthError::WrongKey), "{err}");
    assert_eq!(err.to_string(), "authentication failed: peer does not hold this cluster's key");
    let seen = server.join().unwrap();
    assert_eq!(seen.end, Err("authentication failed: peer does not hold this cluster's key".into()));
}

/// Sends `wire` after a good handshake; returns what the server made of it.
fn server_sees(wire: impl FnOnce(&mut Session) -> Vec<u8>) -> Seen {
    let (addr, server) = echo_server(key(3));
    let (mut s, mut session, _) = raw_client(addr, &key(3));
    s.write_all(&wire(&mut session)).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    server.join().unwrap()
}

#[test]
fn tampered_byte_closes_the_connection() {
    for at in [0usize, 2, 4, 9, 4 + 6 + 3] {
        let seen = server_sees(|s| {
            let mut f = sealed(s, b"PUT_BATC");
            f[at] ^= 0x01;
            f
        });
        assert!(seen.frames.is_empty(), "byte {at}: tampered frame accepted");
        assert!(seen.end.is_err(), "byte {at}");
    }
}

#[test]
fn replayed_frame_is_refused() {
    let seen = server_sees(|s| {
        let f = sealed(s, b"once");
        [f.clone(), f].concat()
    });
    assert_eq!(seen.frames, vec![b"once".to_vec()]);
    assert_eq!(
        seen.end,
        Err("authentication failed: frame 1 does not verify (modified, dropped, reordered or replayed)".into())
    );
}

#[test]
fn reordered_and_dropped_frames_are_refused() {
    let seen = server_sees(|s| {
        let a = sealed(s, b"a");
        let b = sealed(s, b"b");
        [b, a].concat()
    });
    assert!(seen.frames.is_empty());
    assert!(seen.end.unwrap_err().contains("frame 0 does not verify"));
    let seen = server_sees(|s| {
        let _dropped = sealed(s, b"a");
        sealed(s, b"b")
    });
    assert!(seen.frames.is_empty());
}

#[test]
fn frame_reflected_to_its_sender_is_refused() {
    // A server-to-client frame replayed towards the server carries the other direction.
    let (addr, server) = echo_server(key(3));
    let (mut s, mut session, _) = raw_client(addr, &key(3));
    s.write_all(&sealed(&mut session, b"ping")).unwrap();
    let mut echoed = [0u8; 4 + 4 + MAC_LEN];
    s.read_exact(&mut echoed).unwrap();
    s.write_all(&echoed).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(seen.frames.len(), 1);
    assert!(seen.end.unwrap_err().contains("frame 1 does not verify"));
}

#[test]
fn truncated_mac_is_refused() {
    let seen = server_sees(|s| {
        let f = sealed(s, b"short");
        f[..f.len() - 5].to_vec()
    });
    assert!(seen.frames.is_empty());
    assert!(seen.end.is_err());
}

#[test]
fn recorded_session_replayed_on_a_new_connection_is_refused() {
    let (addr, server) = echo_server(key(4));
    let (mut s, mut session, mut recorded) = raw_client(addr, &key(4));
    let f = sealed(&mut session, b"write the namespace");
    s.write_all(&f).unwrap();
    recorded.extend_from_slice(&f);
    drop(s);
    assert_eq!(server.join().unwrap().frames.len(), 1);

    // The attacker has every byte the client sent, but not the key.
    let (addr, server) = echo_server(key(4));
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&recorded).unwrap();
    let seen = server.join().unwrap();
    assert!(seen.frames.is_empty());
    assert_eq!(seen.end, Err(AuthError::WrongKey.to_string()));
}

#[test]
fn huge_length_before_auth_is_refused_without_waiting_for_it() {
    let (addr, server) = echo_server(key(5));
    let mut s = TcpStream::connect(addr).unwrap();
    // A plain frame header announcing 4 GiB, then a request: not a hello.
    let mut junk = u32::MAX.to_be_bytes().to_vec();
    junk.resize(CLIENT_HELLO_LEN, 0x01);
    s.write_all(&junk).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(seen.end, Err(AuthError::NotMonofs.to_string()));
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0, "closed without an answer");
}

#[test]
fn frame_over_max_frame_after_auth_is_refused() {
    let seen = server_sees(|_| ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec());
    assert!(seen.end.unwrap_err().contains("too long"));
}

#[test]
fn silent_peer_times_out() {
    let (addr, server) = echo_server(key(6));
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&MAGIC).unwrap();
    let t = Instant::now();
    let seen = server.join().unwrap();
    assert_eq!(seen.end, Err(AuthError::Timeout.to_string()));
    assert!(t.elapsed() < HANDSHAKE_TIMEOUT * 3, "handshake bound not enforced: {:?}", t.elapsed());
}

#[test]
fn client_refuses_a_server_that_is_not_monofs() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(&[0u8; SERVER_HELLO_LEN]).unwrap();
        let _ = s.read(&mut [0u8; 64]);
    });
    let err = AuthStream::connect(TcpStream::connect(addr).unwrap(), &key(1)).err().unwrap();
    assert!(matches!(err, AuthError::NotMonofs), "{err}");
    h.join().unwrap();
}

#[test]
fn nonces_do_not_repeat() {
    let a = fresh_nonce();
    let b = fresh_nonce();
    assert_ne!(a, b);
}

#[test]
fn failure_log_counts_all_and_logs_a_burst() {
    let log = FailureLog::new();
    for _ in 0..100 {
        log.record("node", "127.0.0.1:9", &AuthError::WrongKey);
    }
    assert_eq!(log.count(), 100);
    let w = log.window.lock().unwrap();
    let w = w.as_ref().unwrap();
    assert_eq!(w.logged, FAILURE_LOG_BURST);
    assert_eq!(w.suppressed, 100 - FAILURE_LOG_BURST as u64);
}

#[test]
fn server_closing_at_accept_is_not_a_key_verdict() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.read_exact(&mut [0u8; CLIENT_HELLO_LEN]).unwrap();
    });
    let err = AuthStream::connect(TcpStream::connect(addr).unwrap(), &key(1)).err().unwrap();
    assert!(matches!(err, AuthError::Closed), "{err}");
    h.join().unwrap();
}

/// CPU cost of the frame MACs, printed (run with `--ignored --nocapture`): the MAC of a
/// 4 KiB and of a 1 MiB DATA reply, made by the node and checked by the client. CPU time
/// of this thread (from /proc), so other load on the machine does not count.
#[test]
#[ignore]
fn mac_cost() {
    fn cpu_ns() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }
    let (mut client, mut server) = (Session::new([9; 32], Role::Client), Session::new([9; 32], Role::Server));
    for size in [4096usize, 1 << 20] {
        let data = vec![0xa5u8; size];
        let hdr = [0u8; 9];
        let rounds = if size > 4096 { 500 } else { 200_000 };
        let (t, c) = (Instant::now(), cpu_ns());
        for _ in 0..rounds {
            let mac = server.seal(&[&hdr, &data]);
            client.open(&[&hdr, &data], &mac).unwrap();
        }
        let cpu = (cpu_ns() - c) as f64 / 1e3 / rounds as f64;
        let wall = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        eprintln!(
            "DATA {size} B: seal + open {cpu:.2} us CPU ({wall:.2} us wall), {:.0} MB/s per side",
            2.0 * size as f64 / cpu
        );
    }
}
