//! Usage plans, conditions, stages and Lambda authorizers.

use super::*;

#[test]
fn shared_usage_plan_covers_its_apis_and_keys_without_plan_warn() {
    let template = r#"
Globals:
  Api:
    Auth:
      ApiKeyRequired: true
      UsagePlan:
        CreateUsagePlan: SHARED
        Throttle: { RateLimit: 3 }
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: app.handler
      CodeUri: fn/
      Events:
        A: { Type: Api, Properties: { RestApiId: !Ref One, Path: /a, Method: get } }
        B: { Type: Api, Properties: { RestApiId: !Ref Two, Path: /b, Method: get } }
        C: { Type: Api, Properties: { RestApiId: !Ref Three, Path: /c, Method: get } }
  One: { Type: AWS::Serverless::Api, Properties: { StageName: one } }
  Two: { Type: AWS::Serverless::Api, Properties: { StageName: two } }
  Three:
    Type: AWS::Serverless::Api
    Properties:
      StageName: three
      Auth: { UsagePlan: { CreateUsagePlan: NONE } }
"#;
    let c = convert(template);
    let plans = plans(&c);
    assert_eq!(plans.len(), 1);
    assert_eq!(
        plans[0].metadata.name.as_deref(),
        Some("serverless-usage-plan")
    );
    let stages: Vec<(&str, &str)> = plans[0]
        .spec
        .stages
        .iter()
        .map(|s| (s.api.as_str(), s.stage.as_str()))
        .collect();
    assert_eq!(stages, [("one", "one"), ("two", "two")]);
    let throttle = plans[0].spec.throttle.as_ref().expect("throttle");
    assert_eq!((throttle.rate_limit, throttle.burst_limit), (3.0, 3));
    assert!(route(&c, "fn-c").spec.auth.api_key_required);
    warned(
        &c,
        "Route/fn-c",
        "auth.apiKeyRequired",
        "no usage plan covers API three",
    );
}

#[test]
fn conditions_compare_scalars_as_strings() {
    let template = r#"
Parameters:
  Count: { Type: Number, Default: 1 }
Conditions:
  One: !Equals [!Ref Count, "1"]
  Lists: !Equals [[a], [b]]
  Both: !And [!Condition One, !Not [!Condition Lists]]
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: app.handler
      CodeUri: fn/
      Environment:
        Variables:
          ONE: !If [One, yes, no]
          LISTS: !If [Lists, yes, no]
          BOTH: !If [Both, yes, no]
          SELF: !If [Loop, yes, no]
"#;
    let c = convert(template);
    let env = &function(&c, "fn").spec.environment;
    assert_eq!(
        (
            env["ONE"].as_str(),
            env["LISTS"].as_str(),
            env["BOTH"].as_str()
        ),
        ("yes", "no", "yes")
    );
    warned(
        &c,
        "Fn",
        "Environment.Variables.SELF",
        "no condition named Loop",
    );
}

#[test]
fn two_default_stages_warn_about_sharing_the_root() {
    let template = r#"
Resources:
  A: { Type: AWS::Serverless::HttpApi }
  B: { Type: AWS::Serverless::HttpApi }
"#;
    let c = convert(template);
    warned(
        &c,
        "Stage/b-default",
        "basePath",
        "Stage/a-default is served at / too",
    );
}

#[test]
fn lambda_authorizers_of_both_api_kinds() {
    let template = r#"
Globals:
  HttpApi:
    Auth:
      DefaultAuthorizer: Simple
      Authorizers:
        Simple:
          FunctionArn: !GetAtt AuthFn.Arn
          AuthorizerPayloadFormatVersion: "2.0"
          EnableSimpleResponses: true
          Identity:
            Headers: [X-Token]
            QueryStrings: [token]
Resources:
  AuthFn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: auth.check
      InlineCode: "def check(event, context):\n    return {'isAuthorized': True}\n"
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: nodejs22.x
      Handler: index.handler
      CodeUri: .
      Events:
        Http: { Type: HttpApi, Properties: { Path: /h, Method: post, TimeoutInMillis: 5000 } }
        Rest:
          Type: Api
          Properties: { RestApiId: !Ref Rest, Path: /r, Method: get, Auth: { Authorizer: Token } }
  Rest:
    Type: AWS::Serverless::Api
    Properties:
      StageName: live
      Auth:
        Authorizers:
          Token:
            FunctionArn: !GetAtt AuthFn.Arn
            Identity: { Header: X-Auth }
"#;
    let c = convert(template);
    let inline = function(&c, "auth-fn")
        .spec
        .code
        .as_ref()
        .and_then(|c| c.inline.clone());
    assert!(inline.expect("inline")["auth.py"].contains("def check"));

    let http = &route(&c, "fn-http").spec;
    assert_eq!(
        http.api, "serverless-http-api",
        "the implicit HTTP API takes Globals.HttpApi"
    );
    assert_eq!(http.timeout_millis, 5000);
    let a = http.auth.authorizer.as_ref().expect("authorizer");
    assert_eq!(a.function, "auth-fn");
    assert_eq!(
        (a.kind, a.payload_format, a.simple_responses),
        (AuthorizerType::Request, PayloadFormat::V2, true)
    );
    assert_eq!(
        a.identity_sources,
        ["$request.header.X-Token", "$request.querystring.token"]
    );
    assert_eq!(a.result_ttl_seconds, 300);

    let rest = &route(&c, "fn-rest").spec;
    let a = rest.auth.authorizer.as_ref().expect("authorizer");
    assert_eq!(
        (a.kind, a.payload_format),
        (AuthorizerType::Token, PayloadFormat::V1)
    );
    assert_eq!(a.identity_sources, ["$request.header.X-Auth"]);
    assert_eq!(
        stage(&c, "rest-live").spec.base_path.as_deref(),
        Some("/live")
    );
    assert_eq!(
        function(&c, "fn")
            .spec
            .code
            .as_ref()
            .and_then(|c| c.path.as_deref()),
        Some("..")
    );
}
