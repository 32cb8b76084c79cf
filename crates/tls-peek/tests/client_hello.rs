//! ClientHellos as a real TLS client (rustls) writes them, whole, cut short, fragmented into
//! many records, and mangled.
#![allow(clippy::unwrap_used)] // tests fail loudly on what they did not expect

use std::sync::Arc;

use sluice_tls_peek::{peek, ClientHello, Error, Peek};

/// The first bytes rustls sends for `server_name` (a DNS name or an IP) offering `alpn`.
fn hello_bytes(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// The same handshake bytes re-cut into records of at most `size` bytes each.
fn fragmented(hello: &[u8], size: usize) -> Vec<u8> {
    let mut handshake = Vec::new();
    let mut at = 0;
    while at + 5 <= hello.len() {
        let len = usize::from(u16::from_be_bytes([hello[at + 3], hello[at + 4]]));
        handshake.extend_from_slice(&hello[at + 5..at + 5 + len]);
        at += 5 + len;
    }
    let mut out = Vec::new();
    for chunk in handshake.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn server_name_and_alpn_of_a_real_client() {
    let bytes = hello_bytes("Passthrough.Example.com", &[b"h2", b"http/1.1"]);
    assert_eq!(
        peek(&bytes).unwrap(),
        Peek::Hello(ClientHello {
            server_name: Some("passthrough.example.com".into()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        })
    );
    // Bytes after the ClientHello (early data, say) do not matter.
    let mut more = bytes.clone();
    more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
    assert!(matches!(peek(&more).unwrap(), Peek::Hello(_)));
}

#[test]
fn no_server_name_for_an_ip_address() {
    let bytes = hello_bytes("192.0.2.7", &[]);
    assert_eq!(
        peek(&bytes).unwrap(),
        Peek::Hello(ClientHello {
            server_name: None,
            alpn: vec![],
        })
    );
}

#[test]
fn every_prefix_asks_for_more() {
    let bytes = hello_bytes("abc.example.com", &[b"h2"]);
    for n in 0..bytes.len() {
        match peek(&bytes[..n]).unwrap() {
            Peek::NeedMore(want) => assert!(want > n && want <= bytes.len(), "{n}: {want}"),
            other => panic!("{n} bytes gave {other:?}"),
        }
    }
}

#[test]
fn a_hello_fragmented_over_many_records() {
    let bytes = hello_bytes("frag.example.com", &[b"h2"]);
    for size in [1, 3, 7, 100] {
        let cut = fragmented(&bytes, size);
        let Peek::Hello(h) = peek(&cut).unwrap() else {
            panic!("records of {size}");
        };
        assert_eq!(h.server_name.as_deref(), Some("frag.example.com"));
        for n in 0..cut.len() {
            assert!(
                matches!(peek(&cut[..n]), Ok(Peek::NeedMore(_))),
                "{size}/{n}"
            );
        }
    }
}

#[test]
fn what_is_not_a_client_hello() {
    assert_eq!(
        peek(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Err(Error::NotTls)
    );
    assert_eq!(peek(&[22, 4, 1, 0, 1, 1]), Err(Error::NotTls));
    // A ServerHello (type 2) where a ClientHello belongs.
    assert_eq!(
        peek(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
        Err(Error::NotClientHello)
    );
    assert_eq!(
        peek(&[22, 3, 3, 0, 0]),
        Err(Error::Malformed("record length"))
    );
    // A ClientHello that says it is 16 MiB.
    assert_eq!(
        peek(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Err(Error::TooLarge)
    );
}

#[test]
fn a_bad_host_name_is_refused() {
    let bytes = hello_bytes("good.example.com", &[]);
    let at = bytes
        .windows(16)
        .position(|w| w == b"good.example.com")
        .unwrap();
    for bad in [b'/', b' ', 0u8, 0xc3] {
        let mut b = bytes.clone();
        b[at + 4] = bad;
        assert_eq!(peek(&b), Err(Error::BadServerName), "{bad:#x}");
    }
}

/// Every byte changed, many ways, and cut anywhere: an answer, never a panic (the fuzz target
/// in fuzz/ does this at random and at length).
#[test]
fn mangled_hellos_never_panic() {
    let bytes = hello_bytes("mangle.example.com", &[b"h2", b"http/1.1"]);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..bytes.len() {
        for v in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] = v;
            let _ = peek(&b);
        }
    }
    for _ in 0..20_000 {
        let mut b = bytes.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let cut = (next() as usize) % (b.len() + 1);
        let _ = peek(&b[..cut]);
    }
}

/// Seeds for the fuzzer (scripts/fuzz.sh runs this): real ClientHellos, whole and
/// fragmented, into the folder SLUICE_FUZZ_SEEDS names.
#[test]
#[ignore = "writes files; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let dir = std::path::PathBuf::from(std::env::var("SLUICE_FUZZ_SEEDS").unwrap());
    let seeds = [
        (
            "sni-alpn",
            hello_bytes("seed.example.com", &[b"h2", b"http/1.1"]),
        ),
        ("ip", hello_bytes("192.0.2.1", &[])),
        (
            "fragmented",
            fragmented(&hello_bytes("frag.example.com", &[b"h2"]), 64),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("rustls-{name}")), bytes).unwrap();
    }
}
