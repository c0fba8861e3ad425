//! The CRDs, the examples and the invalid-object fixtures, checked through the same code paths
//! `kfaas crds` and `kfaas local` use.

use std::path::{Path, PathBuf};

use kfaas::objects::{crd_file_name, crd_yaml, crds, crds_yaml, parse_documents, validate};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn committed_crds_match_the_rust_types() {
    for dir in ["crds", "charts/kfaas/crds"] {
        for crd in crds() {
            let path = repo().join(dir).join(crd_file_name(&crd));
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                committed,
                crd_yaml(&crd),
                "{} is stale: run `cargo run -- crds --out-dir crds --out-dir charts/kfaas/crds`",
                path.display()
            );
        }
        assert_eq!(
            yaml_files(&repo().join(dir)).len(),
            crds().len(),
            "{dir} holds extra files"
        );
    }
    let concatenated: String = yaml_files(&repo().join("crds"))
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read crd"))
        .collect();
    assert_eq!(
        concatenated,
        crds_yaml(),
        "`kfaas crds` differs from `cat crds/*.yaml`"
    );
}

#[test]
fn every_crd_carries_its_cel_rules() {
    let text = crds_yaml();
    for message in [
        "image and runtime are exclusive",
        "scaling.minReplicas must not exceed scaling.maxReplicas",
        "timeoutSeconds must be within 1..900",
        "memoryMb must be within 128..10240",
        "concurrency must be within 1..1000",
        "path must start with '/'",
        "a greedy parameter {name+} may only be the last segment",
        "methods must each be one of",
        "auth.type jwt needs auth.jwt",
        "canary.weight is a percentage",
        "stage variable names may only hold",
        "quota.period must be DAY, WEEK or MONTH",
        "quota.limit must be greater than 0",
    ] {
        assert!(
            text.contains(message),
            "no CEL rule with message {message:?}"
        );
    }
    for short in ["- fn", "- rt", "- stg", "- up"] {
        assert!(text.contains(short), "short name {short} missing");
    }
    assert!(
        text.contains("specReplicasPath: .spec.replicas"),
        "Function scale subresource"
    );
}

#[test]
fn every_example_parses_and_validates() {
    let mut objects = 0;
    let examples = repo().join("examples");
    for file in yaml_files(&examples) {
        let text = std::fs::read_to_string(&file).expect("read example");
        for doc in parse_documents(&file, &text) {
            let doc = doc.unwrap_or_else(|e| panic!("{e}"));
            if let Some(object) = doc.object {
                validate(&object).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                objects += 1;
            }
        }
    }
    for name in ["hello", "shop", "echo-http"] {
        assert!(examples.join(name).is_dir(), "example {name} is missing");
    }
    assert!(objects >= 12, "only {objects} objects found in examples/");
}

/// Each file in tests/fixtures/invalid holds one object and, on its first line,
/// `# expect: <message>`: the object must be rejected with that message. The e2e suite applies the
/// same files to a real API server.
#[test]
fn every_invalid_fixture_is_rejected_with_its_message() {
    let files = yaml_files(&repo().join("tests/fixtures/invalid"));
    assert!(
        files.len() >= 20,
        "expected the invalid fixtures, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read fixture");
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be `# expect: <message>`",
                    file.display()
                )
            });
        let docs = parse_documents(&file, &text);
        assert_eq!(docs.len(), 1, "{}: one object per fixture", file.display());
        let object = match docs.into_iter().next() {
            Some(Ok(doc)) => doc.object.expect("a kfaas object"),
            other => panic!("{}: does not parse: {other:?}", file.display()),
        };
        match validate(&object) {
            Ok(()) => panic!("{}: accepted, expected {expected:?}", file.display()),
            Err(e) => assert!(
                e.to_string().contains(expected),
                "{}: rejected with {e}, expected {expected:?}",
                file.display()
            ),
        }
    }
}

#[test]
fn parse_errors_name_the_file_document_and_object() {
    let text = "apiVersion: kfaas.dev/v1alpha1\nkind: Route\nmetadata: {name: ok}\nspec: {api: a, path: /, function: f}\n---\napiVersion: kfaas.dev/v1alpha1\nkind: Route\nmetadata: {name: broken}\nspec: {api: a, path: 7}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other}\n";
    let docs = parse_documents(Path::new("routes.yaml"), text);
    assert_eq!(docs.len(), 3);
    assert!(matches!(&docs[0], Ok(d) if d.object.is_some()));
    let err = docs[1]
        .as_ref()
        .expect_err("second document is broken")
        .to_string();
    assert!(
        err.starts_with("routes.yaml: document 2 (Route/broken):"),
        "{err}"
    );
    assert!(
        err.contains("spec.path: invalid type"),
        "names the bad field: {err}"
    );
    assert!(
        matches!(&docs[2], Ok(d) if d.object.is_none()),
        "other kinds are skipped"
    );

    let docs = parse_documents(
        Path::new("x.yaml"),
        "apiVersion: kfaas.dev/v1\nkind: Route\nmetadata: {name: r}\n",
    );
    let err = docs[0].as_ref().expect_err("wrong version").to_string();
    assert!(err.contains("use kfaas.dev/v1alpha1"), "{err}");
}
