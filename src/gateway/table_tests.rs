use super::*;
use crate::api::{FunctionSpec, RouteSpec, StageSpec};

fn function(name: &str) -> Function {
    let mut f = Function::new(
        name,
        FunctionSpec {
            image: Some("example.com/fn".into()),
            ..Default::default()
        },
    );
    f.spec.timeout_seconds = 3;
    f
}

fn route(name: &str, methods: &[&str], path: &str, function: &str) -> Route {
    Route::new(
        name,
        RouteSpec {
            api: "shop".into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            path: path.into(),
            function: function.into(),
            timeout_millis: 29_000,
            ..Default::default()
        },
    )
}

fn stage(name: &str, base_path: Option<&str>, host: Option<&str>) -> Stage {
    Stage::new(
        name,
        StageSpec {
            api: "shop".into(),
            base_path: base_path.map(Into::into),
            host: host.map(Into::into),
            variables: [("fn".to_owned(), "b".to_owned())].into(),
            ..Default::default()
        },
    )
}

fn table(routes: Vec<Route>, stages: Vec<Stage>) -> (RouteTable, Vec<TableWarning>) {
    RouteTable::build(&TableInput {
        functions: ["a", "b", "c", "d", "e"]
            .into_iter()
            .map(function)
            .collect(),
        routes,
        stages,
    })
}

fn hit(t: &RouteTable, method: &str, path: &str) -> String {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    match t.lookup(None, &method, path) {
        Ok(m) => m.route.function.clone().expect("function").name,
        Err(miss) => format!("{miss:?}"),
    }
}

#[test]
fn most_specific_path_wins() {
    let (t, warnings) = table(
        vec![
            route("r1", &["GET"], "/orders/{id}", "a"),
            route("r2", &["GET"], "/orders/latest", "b"),
            route("r3", &["ANY"], "/{proxy+}", "c"),
            route("r4", &["GET"], "/orders", "d"),
        ],
        vec![stage("prod", None, None)],
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(hit(&t, "GET", "/orders/latest"), "b");
    assert_eq!(hit(&t, "GET", "/orders/42"), "a");
    assert_eq!(hit(&t, "GET", "/orders"), "d");
    assert_eq!(
        hit(&t, "GET", "/orders/42/items"),
        "c",
        "falls back to the greedy route"
    );
    assert_eq!(
        hit(&t, "POST", "/orders/42"),
        "c",
        "no POST route on that path: greedy ANY"
    );
    assert_eq!(
        hit(&t, "GET", "/"),
        "NoRoute",
        "a greedy parameter needs at least one character"
    );
}

#[test]
fn a_specific_method_beats_any_on_the_same_path() {
    for order in [["a-any", "b-get"], ["b-get", "a-any"]] {
        let routes = order
            .iter()
            .map(|n| {
                if n.ends_with("any") {
                    route(n, &["ANY"], "/items", "a")
                } else {
                    route(n, &["GET"], "/items", "b")
                }
            })
            .collect();
        let (t, warnings) = table(routes, vec![stage("prod", None, None)]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(hit(&t, "GET", "/items"), "b");
        assert_eq!(hit(&t, "DELETE", "/items"), "a");
        assert_eq!(
            hit(&t, "PROPFIND", "/items"),
            "a",
            "unknown methods match ANY"
        );
    }
}

#[test]
fn path_parameters_are_decoded_and_greedy_ones_keep_slashes() {
    let (t, _) = table(
        vec![route("r1", &["GET"], "/users/{id}/files/{path+}", "a")],
        vec![stage("prod", None, None)],
    );
    let m = t
        .lookup(None, &Method::GET, "/users/j%C3%BCrgen/files/a/b%20c.txt")
        .expect("match");
    assert_eq!(
        m.path_parameters(),
        vec![
            ("id".to_owned(), "jürgen".to_owned()),
            ("path".to_owned(), "a/b c.txt".to_owned())
        ]
    );
    assert_eq!(m.route.route_key, "GET /users/{id}/files/{path+}");
    assert_eq!(m.route.resource_path, "/users/{id}/files/{path+}");
}

#[test]
fn stages_by_host_then_longest_base_path() {
    let (t, _) = table(
        vec![route("r1", &["GET"], "/x", "a")],
        vec![
            stage("any", None, None),
            stage("prod", Some("/prod"), None),
            stage("v2", Some("/prod/v2"), None),
            stage("api", None, Some("api.example.com")),
        ],
    );
    let at = |host: Option<&str>, path: &'static str| {
        t.lookup(host, &Method::GET, path)
            .map(|m| (m.stage.name.clone(), m.stage_path.to_owned()))
    };
    assert_eq!(at(None, "/prod/x"), Ok(("prod".into(), "/x".into())));
    assert_eq!(at(None, "/prod/v2/x"), Ok(("v2".into(), "/x".into())));
    assert_eq!(at(None, "/x"), Ok(("any".into(), "/x".into())));
    assert_eq!(
        at(Some("API.example.com:8080"), "/x"),
        Ok(("api".into(), "/x".into())),
        "host match ignores case and port"
    );
    assert_eq!(
        at(Some("api.example.com"), "/prod/x"),
        Err(Miss::NoRoute),
        "a host-specific stage owns its host"
    );
    assert_eq!(
        at(Some("api.example.com"), "/x"),
        Ok(("api".into(), "/x".into()))
    );
    assert_eq!(
        at(None, "/production/x"),
        Err(Miss::NoRoute),
        "base path /prod does not match /production"
    );
}

#[test]
fn no_stage_and_no_route_are_told_apart() {
    let (t, _) = table(
        vec![route("r1", &["GET"], "/x", "a")],
        vec![stage("prod", Some("/prod"), None)],
    );
    assert_eq!(
        t.lookup(None, &Method::GET, "/other/x").err(),
        Some(Miss::NoStage)
    );
    assert_eq!(
        t.lookup(None, &Method::GET, "/prod/y").err(),
        Some(Miss::NoRoute)
    );
    assert_eq!(
        t.lookup(None, &Method::POST, "/prod/x").err(),
        Some(Miss::NoRoute)
    );
}

#[test]
fn stage_variables_and_canary_pick_functions() {
    let mut s = stage("prod", None, None);
    s.spec.canary = Some(crate::api::Canary {
        weight: 25.0,
        variables: [("fn".to_owned(), "c".to_owned())].into(),
    });
    let (t, warnings) = table(
        vec![route("r1", &["GET"], "/x", "${stageVariables.fn}")],
        vec![s],
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let m = t.lookup(None, &Method::GET, "/x").expect("match");
    assert_eq!(m.route.function.as_ref().map(|k| k.name.as_str()), Ok("b"));
    assert_eq!(
        m.route.canary_function.as_ref().map(|k| k.name.as_str()),
        Ok("c")
    );
    assert_eq!(m.stage.canary.as_ref().map(|c| c.fraction), Some(0.25));
}

#[test]
fn bad_routes_are_reported_and_the_rest_still_serves() {
    let (t, warnings) = table(
        vec![
            route("good", &["GET"], "/ok", "a"),
            route("missing-fn", &["GET"], "/nofn", "zzz"),
            route("missing-var", &["GET"], "/novar", "${stageVariables.nope}"),
            route("conflict-1", &["GET"], "/c/{id}", "a"),
            route("conflict-2", &["GET"], "/c/{other}", "a"),
        ],
        vec![stage("prod", None, None)],
    );
    assert_eq!(hit(&t, "GET", "/ok"), "a");
    let text = format!("{warnings:?}");
    assert!(
        text.contains("function default/zzz does not exist"),
        "{text}"
    );
    assert!(text.contains("stage variable nope is not set"), "{text}");
    assert!(
        text.contains("Route/conflict-2") && text.contains("conflicts"),
        "{text}"
    );
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.object == "Route/conflict-2")
            .count(),
        1
    );
}

#[test]
fn substitution_handles_text_around_variables() {
    let vars = [("env".to_owned(), "prod".to_owned())].into();
    assert_eq!(
        substitute_stage_variables("orders-${stageVariables.env}-v1", &vars),
        Ok("orders-prod-v1".into())
    );
    assert!(substitute_stage_variables("${stageVariables.env", &vars).is_err());
}

#[test]
fn host_port_is_stripped_for_names_and_ipv6_literals() {
    assert_eq!(host_without_port("example.com:8080"), "example.com");
    assert_eq!(host_without_port("example.com"), "example.com");
    assert_eq!(host_without_port("[::1]:8080"), "[::1]");
    assert_eq!(host_without_port("[::1]"), "[::1]");
}

#[test]
fn same_named_apis_in_two_namespaces_are_two_apis_to_the_policies() {
    let in_ns = |mut s: Stage, ns: &str| {
        s.metadata.namespace = Some(ns.into());
        s
    };
    let (t, _) = table(
        vec![],
        vec![
            in_ns(stage("prod", Some("/a"), None), "team-a"),
            in_ns(stage("prod", Some("/b"), None), "team-b"),
        ],
    );
    let scopes: Vec<(&str, &str)> = t
        .stages()
        .iter()
        .map(|s| (s.policies.api_scope.as_str(), s.policies.id.as_str()))
        .collect();
    assert!(
        scopes.contains(&("team-a/shop", "team-a/shop/prod")),
        "{scopes:?}"
    );
    assert!(
        scopes.contains(&("team-b/shop", "team-b/shop/prod")),
        "{scopes:?}"
    );
}
