//! `kfaas import sam` end to end: a SAM app converted by the built binary, then served by
//! `kfaas local` and answering a real HTTP request.

mod common;

use std::{path::Path, process::Command};

use common::{LocalServer, repo};
use serde_json::Value;

/// Runs `kfaas import sam TEMPLATE --out-dir OUT` and returns its stderr (the warnings).
fn import(template: &Path, out: &Path, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kfaas"))
        .args(["import", "sam"])
        .arg(template)
        .arg("--out-dir")
        .arg(out)
        .args(extra)
        .output()
        .expect("run kfaas import sam");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "import failed: {stderr}");
    stderr
}

async fn get_json(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

const TEMPLATE: &str = r#"
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting:
    Type: String
    Default: hello
Globals:
  Function:
    Runtime: nodejs20.x
    Timeout: 5
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: hello/
      Handler: app.handler
      Environment:
        Variables:
          GREETING: !Sub "${Greeting} from ${AWS::Region}"
      Events:
        Hello:
          Type: Api
          Properties:
            Path: /hello/{name}
            Method: get
        Jobs:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
  Table:
    Type: AWS::Serverless::SimpleTable
"#;

const HANDLER: &str = r#"
exports.handler = async (event) => ({
  statusCode: 200,
  headers: { "content-type": "application/json" },
  body: JSON.stringify({
    message: `${process.env.GREETING}, ${event.pathParameters.name}`,
    stage: event.requestContext.stage,
    resource: event.resource,
  }),
});
"#;

#[tokio::test]
async fn imported_sam_app_answers_through_kfaas_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("hello")).expect("mkdir");
    std::fs::write(dir.path().join("hello/app.js"), HANDLER).expect("handler");
    std::fs::write(dir.path().join("template.yaml"), TEMPLATE).expect("template");
    let out = dir.path().join("kfaas");

    let warnings = import(
        &dir.path().join("template.yaml"),
        &out,
        &["--region", "eu-central-1"],
    );
    assert!(
        warnings.contains("HelloFunction.Events.Jobs: not converted: Schedule events"),
        "{warnings}"
    );
    assert!(
        warnings.contains("Table: not converted: AWS::Serverless::SimpleTable"),
        "{warnings}"
    );
    let functions = std::fs::read_to_string(out.join("functions.yaml")).expect("functions.yaml");
    assert!(functions.contains("path: ../hello"), "{functions}");

    let server = LocalServer::start(&out, &["--no-access-log"]);
    // The implicit REST API's stage is Prod, served under /Prod as on execute-api.
    let (status, body) = get_json(server.url("/Prod/hello/sam")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "hello from eu-central-1, sam");
    assert_eq!(body["stage"], "Prod");
    assert_eq!(body["resource"], "/hello/{name}");
}

#[tokio::test]
async fn the_sam_hello_example_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    import(
        &repo().join("examples/sam-hello/template.yaml"),
        &out,
        &["--parameter", "Greeting=hi"],
    );
    let server = LocalServer::start(&out, &["--no-access-log"]);
    let (status, body) = get_json(server.url("/Prod/hello/you")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "hi, you");
    assert_eq!(body["region"], "us-east-1");
}

#[test]
fn stdout_output_and_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_kfaas"))
        .args(["import", "sam"])
        .arg(repo().join("examples/sam-hello/template.yaml"))
        .output()
        .expect("run");
    assert!(output.status.success());
    let yaml = String::from_utf8_lossy(&output.stdout);
    for kind in ["kind: Function", "kind: Route", "kind: Stage"] {
        assert!(yaml.contains(kind), "{yaml}");
    }

    let output = Command::new(env!("CARGO_BIN_EXE_kfaas"))
        .args(["import", "sam", "/no/such/template.yaml"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[tokio::test]
async fn code_as_config_maps_runs_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    import(
        &repo().join("examples/sam-hello/template.yaml"),
        &out,
        &["--code", "configmap"],
    );
    let functions = std::fs::read_to_string(out.join("functions.yaml")).expect("functions.yaml");
    assert!(
        functions.contains("configMap: hello-world-function-code"),
        "{functions}"
    );
    let maps = std::fs::read_to_string(out.join("config-maps.yaml")).expect("config-maps.yaml");
    assert!(maps.contains("app.mjs"), "{maps}");
    let server = LocalServer::start(&out, &["--no-access-log"]);
    let (status, body) = get_json(server.url("/Prod/hello/cluster")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "hello, cluster");
}
