//! Arbitrary bytes as the start of a connection: `peek` answers without panicking, asks only
//! for more than it was given, and gives the same answer for the same bytes followed by more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_tls_peek::{peek, Peek};

fuzz_target!(|data: &[u8]| {
    match peek(data) {
        Ok(Peek::NeedMore(n)) => assert!(n > data.len(), "asked for {n} of {} bytes", data.len()),
        Ok(Peek::Hello(h)) => {
            if let Some(name) = &h.server_name {
                assert!(!name.is_empty() && name.len() <= 253);
                assert!(name.bytes().all(|b| !b.is_ascii_uppercase()));
            }
            // A complete ClientHello stays the same whatever follows it.
            let mut more = data.to_vec();
            more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
            assert_eq!(peek(&more), Ok(Peek::Hello(h)));
        }
        Err(_) => {}
    }
});
