//! `db list-clones` against moto server (see support/): listing and the deletion guards.

mod support;

use std::path::Path;

use support::{ids, instance, tag, Moto, OURS};

/// `cargo xtask db <args>` as the AWS binary runs it, in the repository (output checked for secrets).
fn xtask(moto: &Moto, args: &[&str]) -> (i32, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = support::finish(support::command(moto, &root, args, &[]).output().unwrap(), &[]);
    (run.code, run.stdout, run.stderr)
}

async fn scene(moto: &Moto) -> aws_sdk_rds::Client {
    let rds = moto.rds();
    instance(&rds, "prod-db", vec![]).await;
    let ours = |expires: &str| {
        vec![
            tag(OURS.0, OURS.1),
            tag("CloneOf", "prod-db"),
            tag("CreatedAt", "2026-01-01T00:00:00Z"),
            tag("ExpiresAt", expires),
        ]
    };
    instance(&rds, "prod-db-clone-20260101000000", ours("2026-01-01T06:00:00Z")).await;
    instance(&rds, "prod-db-clone-20990101000000", ours("2099-01-01T06:00:00Z")).await;
    // Someone else's instance with a look-alike tag.
    instance(
        &rds,
        "other-clone-20260101000000",
        vec![tag("CreatedBy", "someone else"), tag("ExpiresAt", "2026-01-01T06:00:00Z")],
    )
    .await;
    rds
}

#[tokio::test]
async fn list_clones_shows_only_ours_and_flags_the_overdue() {
    let moto = Moto::start();
    scene(&moto).await;
    let (code, out, err) = xtask(&moto, &["list-clones", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows: Vec<(String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["overdue"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        rows,
        vec![("prod-db-clone-20260101000000".into(), true), ("prod-db-clone-20990101000000".into(), false)]
    );
    let (code, table, _) = xtask(&moto, &["list-clones"]);
    assert_eq!(code, 0);
    assert!(table.contains("OVERDUE") && table.contains("prod-db-clone-20990101000000"), "{table}");
}

#[tokio::test]
async fn delete_expired_deletes_only_expired_instances_of_ours_and_never_the_source() {
    let moto = Moto::start();
    let rds = scene(&moto).await;
    // A crafted case: the source itself carries our tag and an expiry in the past.
    rds.add_tags_to_resource()
        .resource_name("arn:aws:rds:us-east-1:123456789012:db:prod-db")
        .set_tags(Some(vec![tag(OURS.0, OURS.1), tag("ExpiresAt", "2026-01-01T06:00:00Z")]))
        .send()
        .await
        .unwrap();

    // Without a terminal and without -y: nothing happens.
    let (code, _, err) = xtask(&moto, &["list-clones", "--delete-expired", "--source-instance", "prod-db"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pass -y"), "{err}");
    assert_eq!(ids(&rds).await.len(), 4);
    // --prune (the new spelling) with --dry-run: names them, deletes nothing.
    let (code, _, err) = xtask(&moto, &["list-clones", "--prune", "--dry-run", "--source-instance", "prod-db"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("--dry-run: would delete") && err.contains("prod-db-clone-20260101000000"), "{err}");
    assert!(err.contains("prod-db (refused: `prod-db` is the source instance"), "{err}");
    assert!(!err.contains("deprecated"), "{err}");
    assert_eq!(ids(&rds).await.len(), 4, "--dry-run deleted something");

    let (code, _, err) = xtask(&moto, &["list-clones", "--delete-expired", "-y", "--source-instance", "PROD-DB"]);
    assert_eq!(code, 2, "the refused source makes the run fail: {err}");
    assert!(err.contains("--delete-expired is deprecated"), "the old spelling still works, and says so: {err}");
    assert!(err.contains("is the source instance"), "{err}");
    assert_eq!(
        ids(&rds).await,
        vec!["other-clone-20260101000000", "prod-db", "prod-db-clone-20990101000000"],
        "only the expired clone of ours is gone: {err}"
    );
}

#[tokio::test]
async fn no_region_and_unreachable_endpoint_are_clear_errors() {
    let moto = Moto::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = support::command(&moto, &root, &["list-clones"], &[]);
    let run = support::finish(cmd.env_remove("AWS_REGION").output().unwrap(), &[]);
    let err = run.stderr;
    assert_eq!(run.code, 2, "{err}");
    assert!(err.contains("no AWS region") && err.contains("--region"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = [("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))];
    let run = support::finish(support::command(&moto, &root, &["list-clones"], &unreachable).output().unwrap(), &[]);
    let err = run.stderr;
    assert_eq!(run.code, 2, "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert!(err.contains("listing RDS instances"), "{err}");
}
