//! The routing table must never panic: not on any route template it is given (the API server
//! validates them, but the table must hold up on its own), nor on any request path.
#![no_main]

use kfaas::{
    api::{Function, FunctionSpec, Route, RouteSpec, Stage, StageSpec},
    gateway::table::{RouteTable, TableInput},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (template, path) = text.split_once('\n').unwrap_or(("/{proxy+}", &text));
    let route = |name: &str, path: &str| {
        Route::new(name, RouteSpec {
            api: "a".into(),
            methods: vec!["ANY".into()],
            path: path.into(),
            function: "f".into(),
            timeout_millis: 29_000,
            ..Default::default()
        })
    };
    let input = TableInput {
        functions: vec![Function::new("f", FunctionSpec::default())],
        routes: vec![
            route("fuzzed", template),
            route("items", "/items/{id}"),
            route("greedy", "/files/{rest+}"),
        ],
        stages: vec![Stage::new("s", StageSpec {
            api: "a".into(),
            base_path: Some("/base".into()),
            ..Default::default()
        })],
    };
    let (table, _warnings) = RouteTable::build(&input);
    for method in [http::Method::GET, http::Method::POST] {
        let _ = table.lookup(Some("host"), &method, path);
        let _ = table.lookup(None, &method, &format!("/base{path}"));
    }
});
