//! Templates in, objects and warnings out.

mod apis;

use std::path::{Path, PathBuf};

use super::*;
use crate::{
    api::{
        AuthType, AuthorizerType, Function, FunctionRuntime, PayloadFormat, Route, Stage, UsagePlan,
    },
    objects::parse_documents,
};

fn options() -> Options {
    Options {
        template_dir: PathBuf::from("/app"),
        output_dir: PathBuf::from("/app/kfaas"),
        pseudo: Pseudo {
            region: "eu-west-1".into(),
            stack_name: "shop".into(),
            account_id: "123456789012".into(),
        },
        parameters: BTreeMap::new(),
    }
}

fn convert(text: &str) -> Conversion {
    let conversion = convert_sam(text, &options()).expect("converts");
    // What is rendered parses back and passes the CRDs' rules.
    let yaml = render(&conversion.objects).expect("renders");
    for doc in parse_documents(Path::new("out.yaml"), &yaml) {
        let doc = doc.expect("parses");
        if let Some(object) = doc.object {
            validate(&object).expect("valid");
        }
    }
    conversion
}

fn function<'a>(c: &'a Conversion, name: &str) -> &'a Function {
    c.objects
        .iter()
        .find_map(|o| match o {
            KfaasObject::Function(f) if f.metadata.name.as_deref() == Some(name) => Some(f),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no function {name}: {:#?}", names(c)))
}

fn route<'a>(c: &'a Conversion, name: &str) -> &'a Route {
    c.objects
        .iter()
        .find_map(|o| match o {
            KfaasObject::Route(r) if r.metadata.name.as_deref() == Some(name) => Some(r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no route {name}: {:#?}", names(c)))
}

fn stage<'a>(c: &'a Conversion, name: &str) -> &'a Stage {
    c.objects
        .iter()
        .find_map(|o| match o {
            KfaasObject::Stage(s) if s.metadata.name.as_deref() == Some(name) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no stage {name}: {:#?}", names(c)))
}

fn plans(c: &Conversion) -> Vec<&UsagePlan> {
    c.objects
        .iter()
        .filter_map(|o| match o {
            KfaasObject::UsagePlan(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn names(c: &Conversion) -> Vec<String> {
    c.objects.iter().map(KfaasObject::describe).collect()
}

fn warned(c: &Conversion, resource: &str, property: &str, text: &str) {
    assert!(
        c.warnings
            .iter()
            .any(|w| w.resource == resource && w.property == property && w.message.contains(text)),
        "no warning {resource}.{property} containing {text:?}: {:#?}",
        c.warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
}

/// Globals, two REST APIs, an HTTP API with JWT, a usage plan, intrinsics, unsupported parts.
const SHOP: &str = include_str!("../../../tests/fixtures/sam/shop.yaml");

#[test]
fn functions_take_globals_and_resolve_intrinsics() {
    let c = convert(SHOP);
    let list = &function(&c, "list-orders-function").spec;
    assert_eq!(list.runtime, Some(FunctionRuntime::Nodejs));
    assert_eq!(list.handler.as_deref(), Some("orders.list"));
    assert_eq!(list.timeout_seconds, 10, "from Globals");
    assert_eq!(
        list.memory_mb, 512,
        "own MemorySize (FindInMap) wins over Globals"
    );
    assert_eq!(
        list.code.as_ref().and_then(|c| c.path.as_deref()),
        Some("../src")
    );
    assert_eq!(list.scaling.max_replicas, 20);
    assert_eq!(list.scaling.min_replicas, 2);
    let env = &list.environment;
    assert_eq!(
        env["TABLE"], "orders",
        "Globals variables merge with the function's"
    );
    assert_eq!(env["REGION"], "eu-west-1");
    assert_eq!(env["MODE"], "live");
    assert_eq!(env["STACK"], "shop-prod");
    assert!(!env.contains_key("BUCKET"));
    warned(
        &c,
        "ListOrdersFunction",
        "Environment.Variables.BUCKET",
        "!GetAtt Bucket.Arn",
    );

    let admin = &function(&c, "shop-admin").spec;
    assert_eq!(admin.runtime, Some(FunctionRuntime::Python));
    assert_eq!(
        admin.code.as_ref().and_then(|c| c.path.as_deref()),
        Some("../../admin")
    );
    assert_eq!(admin.timeout_seconds, 900);
    warned(&c, "AdminFunction", "Timeout", "outside 1..900");

    let auth = &function(&c, "auth-function").spec;
    let inline = auth
        .code
        .as_ref()
        .and_then(|c| c.inline.as_ref())
        .expect("inline");
    assert!(inline["auth.js"].contains("isAuthorized"));

    let users = &function(&c, "users-function").spec;
    assert_eq!(users.runtime, Some(FunctionRuntime::Provided));
    assert_eq!(users.handler, None);
}

#[test]
fn rest_api_events_become_routes_with_cors_auth_and_keys() {
    let c = convert(SHOP);
    let list = &route(&c, "list-orders-function-list").spec;
    assert_eq!(list.api, "serverless-rest-api");
    assert_eq!(list.methods, ["GET"]);
    assert_eq!(list.path, "/orders");
    assert_eq!(list.function, "list-orders-function");
    assert_eq!(list.payload_format, PayloadFormat::V1);
    let cors = list.cors.as_ref().expect("cors from Globals.Api");
    assert_eq!(cors.allow_origins, ["https://shop.example"]);
    assert_eq!(cors.allow_methods, ["GET", "POST"]);
    assert_eq!(cors.max_age_seconds, Some(600));
    assert_eq!(
        route(&c, "list-orders-function-get").spec.path,
        "/orders/{id}"
    );

    let any = &route(&c, "admin-function-any").spec;
    assert_eq!(any.api, "admin-api");
    assert_eq!(any.methods, ["ANY"]);
    assert_eq!(any.path, "/admin/{proxy+}");
    assert!(any.auth.api_key_required);
    assert_eq!(
        any.auth.kind,
        AuthType::Function,
        "DefaultAuthorizer applies"
    );
    let authorizer = any.auth.authorizer.as_ref().expect("authorizer");
    assert_eq!(authorizer.function, "auth-function");
    assert_eq!(authorizer.kind, AuthorizerType::Request);
    assert_eq!(
        authorizer.identity_sources,
        ["$request.header.Authorization"]
    );
    assert_eq!(authorizer.result_ttl_seconds, 60);

    let open = &route(&c, "admin-function-open").spec;
    assert_eq!(open.auth.kind, AuthType::None);
    assert!(!open.auth.api_key_required);

    warned(
        &c,
        "ListOrdersFunction",
        "Events.Queue",
        "not converted: SQS events",
    );
}

#[test]
fn stages_keep_the_execute_api_paths() {
    let c = convert(SHOP);
    let implicit = &stage(&c, "serverless-rest-api-prod").spec;
    assert_eq!(implicit.stage_name.as_deref(), Some("Prod"));
    assert_eq!(implicit.base_path.as_deref(), Some("/Prod"));

    let admin = &stage(&c, "admin-api-prod").spec;
    assert_eq!(admin.base_path.as_deref(), Some("/prod"));
    assert_eq!(admin.variables["table"], "orders-prod");
    let canary = admin.canary.as_ref().expect("canary");
    assert_eq!(canary.weight, 10.0);
    assert_eq!(canary.variables["table"], "orders-canary");
    let throttle = admin.throttle.as_ref().expect("throttle");
    assert_eq!((throttle.rate_limit, throttle.burst_limit), (50.0, 100));

    let users = &stage(&c, "users-api-default").spec;
    assert_eq!(users.base_path, None, "$default has no base path");
    assert_eq!(users.stage_name, None);
}

#[test]
fn usage_plan_gets_a_secret_with_a_placeholder_and_a_warning() {
    let c = convert(SHOP);
    let plans = plans(&c);
    assert_eq!(plans.len(), 1);
    let plan = &plans[0].spec;
    assert_eq!(
        plans[0].metadata.name.as_deref(),
        Some("admin-api-usage-plan")
    );
    assert_eq!(plan.stages[0].api, "admin-api");
    assert_eq!(plan.stages[0].stage, "prod");
    let quota = plan.quota.as_ref().expect("quota");
    assert_eq!((quota.limit, quota.period.as_str()), (1000, "DAY"));
    assert_eq!(plan.throttle.as_ref().map(|t| t.burst_limit), Some(10));
    let key = &plan.api_keys[0].secret_ref.name;
    let secret = c
        .objects
        .iter()
        .find_map(|o| match o {
            KfaasObject::Secret(s) if s.metadata.name.as_ref() == Some(key) => Some(s),
            _ => None,
        })
        .expect("secret");
    let value = &secret.string_data.as_ref().expect("stringData")["apiKey"];
    assert!(value.starts_with("change-me-"));
    warned(
        &c,
        "AdminApi",
        "Auth.UsagePlan",
        "API key values cannot be imported",
    );
}

#[test]
fn http_api_routes_carry_jwt_auth() {
    let c = convert(SHOP);
    let me = &route(&c, "users-function-me").spec;
    assert_eq!(me.api, "users-api");
    assert_eq!(me.payload_format, PayloadFormat::V2);
    assert_eq!(me.auth.kind, AuthType::Jwt);
    let jwt = me.auth.jwt.as_ref().expect("jwt");
    assert_eq!(
        jwt.issuer,
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc/"
    );
    assert_eq!(
        jwt.jwks_uri.as_deref(),
        Some("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc/.well-known/jwks.json")
    );
    assert_eq!(jwt.audiences, ["shop-web", "shop-app"]);
    assert_eq!(jwt.scopes, ["profile"]);
    assert_eq!(
        me.cors.as_ref().map(|c| c.allow_methods.clone()),
        Some(vec!["GET".to_owned()])
    );

    let public = &route(&c, "users-function-public").spec;
    assert_eq!(public.auth.kind, AuthType::None);
    assert_eq!(public.payload_format, PayloadFormat::V1);
    assert_eq!(public.path, "/public/{name}");
}

#[test]
fn unsupported_parts_are_warnings_not_failures() {
    let c = convert(SHOP);
    warned(&c, "JavaFunction", "Runtime", "java21 is not supported");
    warned(
        &c,
        "Table",
        "",
        "not converted: AWS::Serverless::SimpleTable",
    );
    warned(&c, "Bucket", "", "not converted: AWS::S3::Bucket");
    assert!(
        !names(&c)
            .iter()
            .any(|n| n.contains("java") || n.contains("dev-only")),
        "skipped: {:?}",
        names(&c)
    );
    // The false condition drops DevOnly silently.
    assert!(!c.warnings.iter().any(|w| w.resource == "DevOnly"));
}

#[test]
fn parameters_can_be_overridden_and_unresolved_auth_leaves_the_route_out() {
    let template = r#"
Parameters:
  Stage: { Type: String }
  PoolId: { Type: String }
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: nodejs22.x
      Handler: index.handler
      CodeUri: ./fn
      Events:
        Secret:
          Type: HttpApi
          Properties:
            ApiId: !Ref Api
            Path: /secret
            Method: GET
        S3:
          Type: S3
          Properties: { Bucket: !Ref B }
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      StageName: !Ref Stage
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            JwtConfiguration:
              issuer: !Sub "https://issuer/${PoolId}"
              audience: [a]
"#;
    let c = convert(template);
    warned(&c, "Api", "StageName", "--parameter Stage=VALUE");
    warned(&c, "Api", "Auth.Authorizers.Jwt", "no such parameter");
    warned(
        &c,
        "Fn",
        "Events.Secret.Properties.Auth.Authorizer",
        "left out rather than left open",
    );
    warned(&c, "Fn", "Events.S3", "not converted: S3 events");
    assert!(!c.objects.iter().any(|o| matches!(o, KfaasObject::Route(_))));

    let mut opts = options();
    opts.parameters.insert("Stage".into(), "v1".into());
    opts.parameters.insert("PoolId".into(), "p1".into());
    let c = convert_sam(template, &opts).expect("converts");
    assert!(
        c.warnings.iter().all(|w| w.property != "StageName"),
        "{:?}",
        c.warnings
    );
    let r = c
        .objects
        .iter()
        .find_map(|o| match o {
            KfaasObject::Route(r) => Some(r),
            _ => None,
        })
        .expect("route");
    assert_eq!(
        r.spec.auth.jwt.as_ref().map(|j| j.issuer.as_str()),
        Some("https://issuer/p1")
    );
    assert_eq!(stage(&c, "api-v1").spec.base_path.as_deref(), Some("/v1"));
    assert_eq!(
        function(&c, "fn")
            .spec
            .code
            .as_ref()
            .and_then(|c| c.path.as_deref()),
        Some("../fn")
    );
}

#[test]
fn json_templates_and_bad_input() {
    let json = r#"{"Resources": {"Hello": {"Type": "AWS::Serverless::Function", "Properties": {
        "Runtime": "python3.11", "Handler": "app.handler", "CodeUri": "kfaas/code",
        "Environment": {"Variables": {"R": {"Fn::Sub": "${AWS::Region}-${!Literal}"}, "N": {"Ref": "AWS::NoValue"}}},
        "Events": {"Root": {"Type": "Api", "Properties": {"Path": "/", "Method": "x-amazon-apigateway-any-method"}}}}}}}"#;
    let c = convert(json);
    let hello = &function(&c, "hello").spec;
    assert_eq!(hello.environment["R"], "eu-west-1-${Literal}");
    assert!(!hello.environment.contains_key("N"));
    assert_eq!(
        hello.code.as_ref().and_then(|c| c.path.as_deref()),
        Some("./code")
    );
    assert_eq!(route(&c, "hello-root").spec.methods, ["ANY"]);

    assert!(matches!(
        convert_sam("a: [", &options()),
        Err(ImportError::Template(_))
    ));
    assert!(matches!(
        convert_sam("a: 1", &options()),
        Err(ImportError::NoResources)
    ));
    assert!(matches!(
        convert_sam("- 1", &options()),
        Err(ImportError::Template(_))
    ));
    // Odd shapes warn instead of panicking.
    let odd = r#"
Resources:
  A: { Type: AWS::Serverless::Function, Properties: { Runtime: [1], Handler: !Ref A } }
  B: { Type: AWS::Serverless::Function, Properties: { Runtime: nodejs20.x, Handler: x.y, CodeUri: { Bucket: b, Key: k } } }
  C: { Type: AWS::Serverless::Function, Properties: { PackageType: Image, ImageUri: !Sub "${AWS::AccountId}.dkr.ecr.${AWS::Region}.amazonaws.com/c:1" } }
  D: { Type: AWS::Serverless::Api, Properties: { StageName: v1, Auth: { Authorizers: { X: { UserPoolArn: !GetAtt P.Arn } } } } }
  E: 7
"#;
    let c = convert(odd);
    warned(&c, "A", "Runtime", "not converted");
    warned(&c, "B", "CodeUri", "S3");
    assert_eq!(
        function(&c, "c").spec.image.as_deref(),
        Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com/c:1")
    );
    warned(&c, "D", "Auth.Authorizers.X", "Cognito");
}

#[test]
fn relative_paths() {
    use super::function::relative;
    assert_eq!(
        relative(Path::new("/a/out"), Path::new("/a/src/")),
        "../src"
    );
    assert_eq!(relative(Path::new("/a"), Path::new("/a/./src")), "./src");
    assert_eq!(relative(Path::new("/a"), Path::new("/a")), ".");
    assert_eq!(
        relative(Path::new("/a/b/c"), Path::new("/a/x/../y")),
        "../../y"
    );
}
