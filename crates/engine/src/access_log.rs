//! The JSON access log: one line per request on stdout.

use std::io::Write;

/// Writes one JSON object as a line. A failed write (closed stdout) is dropped: the access log
/// must never fail a request.
pub fn write_line(line: &serde_json::Value) {
    let mut buf = serde_json::to_vec(line).unwrap_or_default();
    buf.push(b'\n');
    let _ = std::io::stdout().lock().write_all(&buf);
}
