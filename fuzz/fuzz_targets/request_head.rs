//! The gateway's HTTP/1.1 server (`gateway::h1_request`) reads whatever bytes a client sends: it
//! must never panic, and a head it accepts must be the same whatever follows it.
#![no_main]

use kfaas::gateway::h1_request::decode_request_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|wire: &[u8]| {
    if let Ok(Some((head, len))) = decode_request_head(wire) {
        assert!(len <= wire.len());
        let (alone, alone_len) = match decode_request_head(&wire[..len]) {
            Ok(Some(found)) => found,
            other => panic!("the head alone was not accepted: {other:?}"),
        };
        assert_eq!(alone_len, len);
        assert_eq!(alone.parts.method, head.parts.method);
        assert_eq!(alone.parts.uri, head.parts.uri);
        assert_eq!(alone.parts.headers, head.parts.headers);
        assert_eq!(alone.keep_alive, head.keep_alive);
    }
});
