//! The kfaas objects against a real API server: the CRDs install and become Established, every
//! example is accepted, and every invalid fixture (tests/fixtures/invalid, shared with the unit
//! tests) is rejected by the API server's OpenAPI/CEL validation with its expected message.

use std::collections::BTreeMap;

use kfaas_e2e::{
    client, create, delete_namespace, documents, dynamic_api, ensure_crds, is_kfaas, name_of, repo,
    temp_namespace, yaml_files,
};

const NEEDS_CLUSTER: &str = "e2e: needs a cluster, run e2e/run.sh";

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn crds_install_and_serve_every_kind() {
    let _ = NEEDS_CLUSTER;
    let client = client().await;
    let names = ensure_crds(&client)
        .await
        .expect("CRDs apply and become Established");
    for kind in ["functions", "routes", "stages", "usageplans"] {
        let name = format!("{kind}.kfaas.dev");
        assert!(
            names.contains(&name),
            "crds/ has no CRD {name}; found {names:?}"
        );
    }
    // Each kind is served: listing it answers (empty or not).
    let ns = temp_namespace(&client, "e2e-crds")
        .await
        .expect("namespace");
    for kind in ["Function", "Route", "Stage", "UsagePlan"] {
        let doc = serde_json::json!({"apiVersion": "kfaas.dev/v1alpha1", "kind": kind});
        let api = dynamic_api(&client, &ns, &doc).expect("api");
        let list = api.list(&Default::default()).await;
        assert!(list.is_ok(), "listing {kind} failed: {:?}", list.err());
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn every_example_is_accepted() {
    let client = client().await;
    ensure_crds(&client).await.expect("CRDs");
    let examples = repo().join("examples");
    // One namespace per example directory: examples may reuse names (a Stage `dev`, ...).
    let mut by_dir: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for file in yaml_files(&examples) {
        // SAM templates (examples/sam-hello) are input to `kfaas import sam`, not objects.
        if std::fs::read_to_string(&file).is_ok_and(|t| t.contains("AWS::Serverless")) {
            continue;
        }
        let rel = file.strip_prefix(&examples).expect("under examples/");
        let dir = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        by_dir.entry(dir).or_default().push(file);
    }
    let mut accepted = 0;
    let mut failures = Vec::new();
    for (dir, files) in by_dir {
        let ns = temp_namespace(
            &client,
            &format!(
                "e2e-ex-{}",
                dir.to_ascii_lowercase().replace(['_', '.'], "-")
            ),
        )
        .await
        .expect("namespace");
        for file in files {
            let docs = documents(&file).unwrap_or_else(|e| panic!("{e:#}"));
            for doc in docs.into_iter().filter(is_kfaas) {
                let name = name_of(&doc).unwrap_or_default();
                let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
                match create(&client, &ns, &doc).await {
                    Ok(obj) => {
                        // It reads back with the spec it was given.
                        let api = dynamic_api(&client, &ns, &doc).expect("api");
                        let got = api.get(&name).await.expect("read back");
                        assert_eq!(got.metadata.uid, obj.metadata.uid);
                        assert!(
                            got.data.get("spec").is_some(),
                            "{kind}/{name} from {} lost its spec",
                            file.display()
                        );
                        accepted += 1;
                    }
                    Err(e) => failures.push(format!("{} {kind}/{name}: {e}", file.display())),
                }
            }
        }
        delete_namespace(&client, &ns).await;
    }
    assert!(
        failures.is_empty(),
        "the API server rejected example objects:\n  {}",
        failures.join("\n  ")
    );
    assert!(
        accepted >= 12,
        "only {accepted} kfaas objects found in examples/"
    );
}

#[tokio::test]
#[ignore = "e2e: needs a cluster, run e2e/run.sh"]
async fn every_invalid_fixture_is_rejected_with_its_message() {
    let client = client().await;
    ensure_crds(&client).await.expect("CRDs");
    let ns = temp_namespace(&client, "e2e-invalid")
        .await
        .expect("namespace");
    let files = yaml_files(&repo().join("tests/fixtures/invalid"));
    assert!(
        files.len() >= 20,
        "expected the invalid fixtures, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read fixture");
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be `# expect: <message>`",
                    file.display()
                )
            })
            .trim()
            .to_owned();
        let docs = documents(file).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(docs.len(), 1, "{}: one object per fixture", file.display());
        let doc = &docs[0];
        match create(&client, &ns, doc).await {
            Ok(_) => {
                failures.push(format!(
                    "{}: ACCEPTED, expected rejection with {expected:?}",
                    file.display()
                ));
                let api = dynamic_api(&client, &ns, doc).expect("api");
                let _ = api
                    .delete(&name_of(doc).unwrap_or_default(), &Default::default())
                    .await;
            }
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(&expected) {
                    failures.push(format!(
                        "{}: rejected with {} {:?}, expected 422 containing {expected:?}",
                        file.display(),
                        status.code,
                        status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", file.display())),
        }
    }
    delete_namespace(&client, &ns).await;
    assert!(
        failures.is_empty(),
        "{} of {} invalid fixtures were not rejected as expected by the API server:\n  {}",
        failures.len(),
        files.len(),
        failures.join("\n  ")
    );
}
