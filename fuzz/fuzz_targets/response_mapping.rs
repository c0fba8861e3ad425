//! `response::map_v1` / `map_v2` on arbitrary bytes: a function's result is untrusted input.
//! Beyond "never panics": whatever 1.0 accepts, 2.0 accepts too, with the same status and body
//! (2.0's proxy-response shape is 1.0's plus `cookies`).
#![no_main]

use kfaas::gateway::response::{map_v1, map_v2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v1 = map_v1(data);
    let v2 = map_v2(data);
    if let Ok(v1) = v1 {
        assert!((100..=599).contains(&v1.status().as_u16()));
        match v2 {
            Ok(v2) => {
                assert_eq!(v1.status(), v2.status());
                assert_eq!(v1.body(), v2.body());
            }
            Err(e) => panic!("accepted by 1.0, rejected by 2.0: {e}"),
        }
    }
});
