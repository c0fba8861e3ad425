//! The gateway's HTTP/1.1 client (`gateway::h1`) reads whatever bytes an instance sends: it must
//! never panic, whatever they are and however the reads split them, and a body it accepts must
//! be the same however the reads split it.
#![no_main]

use http::Method;
use kfaas::gateway::h1::decode_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, bool, &[u8])| {
    let (step, head, wire) = input;
    let method = if head { Method::HEAD } else { Method::GET };
    let whole = decode_answer(wire, &method, wire.len());
    let split = decode_answer(wire, &method, usize::from(step));
    if let (Ok((a, body_a)), Ok((b, body_b))) = (&whole, &split) {
        assert_eq!(a.status(), b.status());
        assert_eq!(body_a, body_b, "the body depends on how the reads split it");
    }
});
