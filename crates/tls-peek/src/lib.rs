//! Reads the ClientHello at the start of a TLS connection without terminating TLS: what a
//! passthrough listener (TLSRoute) routes by. Give [`peek`] the bytes read so far; it answers
//! that it needs more, what the ClientHello asks for (server name, ALPN protocols), or why the
//! bytes are not a ClientHello it will route. The bytes are not consumed: the caller forwards
//! them to the backend as they are.
//!
//! The ClientHello may span several TLS records (RFC 8446 §5.1 lets a handshake message be
//! fragmented); at most [`MAX_HELLO`] bytes of it are read. Everything is bounds-checked and
//! nothing allocates more than the input's size; the fuzz target in `fuzz/` runs it on
//! arbitrary input.
#![forbid(unsafe_code)]

use std::fmt;

/// The largest ClientHello (handshake message body) read: 64 KiB, beyond what any client sends
/// (post-quantum key shares make it about 2 KiB).
pub const MAX_HELLO: usize = 64 * 1024;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
/// A TLS record's payload is at most 2^14 bytes (plaintext records, as a ClientHello's are).
const MAX_RECORD: usize = 1 << 14;

/// What a ClientHello asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` extension's host name, lowercased; None without one.
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

/// The answer for the bytes read so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peek {
    /// Read at least this many bytes in all, then ask again.
    NeedMore(usize),
    Hello(ClientHello),
}

/// Why the bytes are not a ClientHello to route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The first record is not a TLS handshake record (plain HTTP, say).
    NotTls,
    /// The handshake message is not a ClientHello.
    NotClientHello,
    /// The ClientHello is larger than [`MAX_HELLO`].
    TooLarge,
    /// A length or field does not fit: the named part.
    Malformed(&'static str),
    /// The server name is not a valid host name.
    BadServerName,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotTls => write!(f, "not a TLS handshake record"),
            Error::NotClientHello => write!(f, "the first handshake message is not a ClientHello"),
            Error::TooLarge => write!(f, "the ClientHello is larger than {MAX_HELLO} bytes"),
            Error::Malformed(what) => write!(f, "malformed ClientHello: {what}"),
            Error::BadServerName => write!(f, "the server_name is not a valid host name"),
        }
    }
}

impl std::error::Error for Error {}

/// Reads the ClientHello from the start of `buf`, the bytes of the connection so far.
pub fn peek(buf: &[u8]) -> Result<Peek, Error> {
    // The handshake bytes, gathered from as many records as it takes.
    let mut handshake: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return Ok(Peek::NeedMore(at + 5));
        };
        if header[0] != RECORD_HANDSHAKE {
            return Err(if at == 0 {
                Error::NotTls
            } else {
                Error::Malformed("a record other than handshake inside the ClientHello")
            });
        }
        // Legacy record versions are 0x0300..=0x0304; the major byte is always 3.
        if header[1] != 3 {
            return Err(if at == 0 {
                Error::NotTls
            } else {
                Error::Malformed("record version")
            });
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err(Error::Malformed("record length"));
        }
        let end = at + 5 + len;
        let Some(payload) = buf.get(at + 5..end) else {
            return Ok(Peek::NeedMore(end));
        };
        if handshake.len() + payload.len() > MAX_HELLO + 4 {
            return Err(Error::TooLarge);
        }
        handshake.extend_from_slice(payload);
        at = end;
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != HANDSHAKE_CLIENT_HELLO {
            return Err(Error::NotClientHello);
        }
        let body_len = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
        if body_len > MAX_HELLO {
            return Err(Error::TooLarge);
        }
        if handshake.len() >= 4 + body_len {
            return client_hello(&handshake[4..4 + body_len]).map(Peek::Hello);
        }
        // More records follow; at least one more header.
        if buf.len() <= at {
            return Ok(Peek::NeedMore(at + 5));
        }
    }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if n > self.bytes.len() {
            return Err(Error::Malformed(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let n = usize::from(self.u8(what)?);
        self.take(n, what)
    }
    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], Error> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The ClientHello body (RFC 8446 §4.1.2, also TLS 1.2's).
fn client_hello(body: &[u8]) -> Result<ClientHello, Error> {
    let mut r = Reader { bytes: body };
    r.take(2, "legacy_version")?;
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(Error::Malformed("legacy_session_id"));
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Error::Malformed("cipher_suites"));
    }
    if r.vec8("legacy_compression_methods")?.is_empty() {
        return Err(Error::Malformed("legacy_compression_methods"));
    }
    let mut hello = ClientHello::default();
    // A TLS 1.2 ClientHello may end here, without extensions.
    if r.is_empty() {
        return Ok(hello);
    }
    let mut exts = Reader {
        bytes: r.vec16("extensions")?,
    };
    if !r.is_empty() {
        return Err(Error::Malformed("bytes after the extensions"));
    }
    let mut seen_sni = false;
    let mut seen_alpn = false;
    while !exts.is_empty() {
        let ty = exts.u16("extension type")?;
        let data = exts.vec16("extension data")?;
        match ty {
            EXT_SERVER_NAME => {
                if std::mem::replace(&mut seen_sni, true) {
                    return Err(Error::Malformed("server_name given twice"));
                }
                hello.server_name = server_name(data)?;
            }
            EXT_ALPN => {
                if std::mem::replace(&mut seen_alpn, true) {
                    return Err(Error::Malformed("ALPN given twice"));
                }
                hello.alpn = alpn(data)?;
            }
            _ => {}
        }
    }
    Ok(hello)
}

/// The `server_name` extension (RFC 6066 §3): the host_name entry.
fn server_name(data: &[u8]) -> Result<Option<String>, Error> {
    let mut r = Reader { bytes: data };
    let mut list = Reader {
        bytes: r.vec16("server_name_list")?,
    };
    if !r.is_empty() || list.is_empty() {
        return Err(Error::Malformed("server_name_list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8("server name type")?;
        let name = list.vec16("server name")?;
        // host_name (0) is the only type defined; "no more than one name of the same type".
        if name_type == 0 {
            if host.is_some() {
                return Err(Error::Malformed("two host names"));
            }
            host = Some(host_name(name)?);
        }
    }
    Ok(host)
}

/// A DNS host name as SNI carries it: ASCII letters, digits, `-`, `_` and dots, labels of 1
/// to 63 bytes, at most 253 in all, no trailing dot; lowercased.
fn host_name(name: &[u8]) -> Result<String, Error> {
    if name.is_empty() || name.len() > 253 {
        return Err(Error::BadServerName);
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return Err(Error::BadServerName);
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::BadServerName);
        }
    }
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The ALPN extension (RFC 7301 §3.1): non-empty protocol names.
fn alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let mut r = Reader { bytes: data };
    let mut list = Reader {
        bytes: r.vec16("protocol_name_list")?,
    };
    if !r.is_empty() || list.is_empty() {
        return Err(Error::Malformed("protocol_name_list"));
    }
    let mut out = Vec::new();
    while !list.is_empty() {
        let p = list.vec8("protocol name")?;
        if p.is_empty() {
            return Err(Error::Malformed("empty protocol name"));
        }
        out.push(p.to_vec());
    }
    Ok(out)
}
