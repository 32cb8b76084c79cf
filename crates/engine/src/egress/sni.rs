//! Reading the server name (SNI) from the first TLS record of a connection, without terminating
//! TLS. Hand-written because rustls does not expose ClientHello parsing on its own; the format
//! is small and fixed (RFC 8446 §4.1.2, RFC 6066 §3).

/// The SNI host name of a TLS ClientHello at the start of `buf`, if `buf` holds one whole.
pub fn server_name(buf: &[u8]) -> Option<String> {
    let mut r = Reader(buf);
    // TLS record: handshake (22), version, length.
    if r.u8()? != 22 {
        return None;
    }
    r.skip(2)?;
    let record_len = r.u16()? as usize;
    let mut r = Reader(r.take(record_len)?);
    // Handshake: client_hello (1), 24-bit length.
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()? as usize;
    let mut r = Reader(r.take(len)?);
    r.skip(2 + 32)?; // legacy_version, random
    let sid = r.u8()? as usize;
    r.skip(sid)?;
    let suites = r.u16()? as usize;
    r.skip(suites)?;
    let comp = r.u8()? as usize;
    r.skip(comp)?;
    let ext_len = r.u16()? as usize;
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = exts.u16()? as usize;
        let body = exts.take(len)?;
        if ty != 0 {
            continue;
        }
        // server_name extension: list length, then (type 0 = host_name, length, name).
        let mut s = Reader(body);
        let list = s.u16()? as usize;
        let mut s = Reader(s.take(list)?);
        while !s.0.is_empty() {
            let name_type = s.u8()?;
            let n = s.u16()? as usize;
            let name = s.take(n)?;
            if name_type == 0 {
                return std::str::from_utf8(name)
                    .ok()
                    .map(|n| n.to_ascii_lowercase());
            }
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<u32> {
        self.take(3)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello, produced by rustls for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(cfg), name.to_string().try_into().unwrap())
                .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_sni_of_a_rustls_client_hello() {
        assert_eq!(
            server_name(&client_hello("api.Example.com")).as_deref(),
            Some("api.example.com")
        );
    }

    #[test]
    fn not_tls_or_truncated() {
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n\r\n"), None);
        let hello = client_hello("a.example");
        assert_eq!(server_name(&hello[..hello.len() / 2]), None);
    }
}
