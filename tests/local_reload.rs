//! Hot reload: a changed folder is picked up; a bad file is reported and the last good config
//! keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::{LocalServer, repo};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

async fn status_of(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_for_status(client: &reqwest::Client, url: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = status_of(client, url).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} answered {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn reload_applies_good_changes_and_keeps_serving_through_bad_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo().join("examples/hello"), dir.path());
    let server = LocalServer::start(dir.path(), &["--no-access-log"]);
    let client = reqwest::Client::new();
    let hello = server.url("/hello");
    let hi = server.url("/hi");
    assert_eq!(status_of(&client, &hello).await, 200);
    assert_eq!(status_of(&client, &hi).await, 404);

    // A new route in a new file is served after the reload.
    std::fs::write(
        dir.path().join("extra.yaml"),
        "apiVersion: kfaas.dev/v1alpha1\nkind: Route\nmetadata: {name: hi}\nspec: {api: hello, methods: [GET], path: /hi, function: hello}\n",
    )
    .expect("write");
    wait_for_status(&client, &hi, 200).await;

    // A bad file: reported with its file and message, and everything keeps serving.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: kfaas.dev/v1alpha1\nkind: Route\nmetadata: {name: broken}\nspec: {api: hello, methods: [GET], path: no-slash, function: hello}\n",
    )
    .expect("write");
    server.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("bad.yaml")
            && l.contains("Route/broken")
            && l.contains("path must start with '/'")
    });
    server.wait_for_line(Duration::from_secs(5), |l| {
        l.contains("the last good config keeps serving")
    });
    // Removing the extra route while the folder is bad changes nothing either.
    std::fs::remove_file(dir.path().join("extra.yaml")).expect("remove");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(&client, &hello).await, 200);
    assert_eq!(
        status_of(&client, &hi).await,
        200,
        "last good config still serves /hi"
    );

    // Fixing the folder applies the latest state.
    std::fs::remove_file(dir.path().join("bad.yaml")).expect("remove");
    wait_for_status(&client, &hi, 404).await;
    assert_eq!(status_of(&client, &hello).await, 200);
}
