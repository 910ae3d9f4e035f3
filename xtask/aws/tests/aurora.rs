//! `db clone-prod` and `db list-clones` with an Aurora PostgreSQL source, against moto (behind the
//! recording, fault-injecting proxy), with the test PostgreSQL server (TLS on) standing in for
//! the clone's instance, reached through the `command` tunnel. A one-time master password is set
//! on the clone (ModifyDBCluster); the proxy sets it on the stand-in, as AWS would.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

struct Scene {
    moto: Moto,
    db: StandIn,
    project: Project,
    log: std::path::PathBuf,
}

/// An Aurora production, its database, and a project whose source is `source` (a line of
/// `[workspace.metadata.db.aws]`), logging in with a one-time password.
async fn scene(tag: &str, source: &str) -> Scene {
    let moto = Moto::start();
    let db = StandIn::create(tag);
    aurora_production(&moto, &db.role, &db.dbname).await;
    let project = Project::configured(tag, true, "");
    let toml = project.dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace(&format!("source_instance = \"{SOURCE}\""), source);
    std::fs::write(&toml, text).unwrap();
    // What AWS does on ModifyDBCluster, done to the stand-in: the master password set (through
    // psql's stdin, not its argv).
    let (admin, role) = (db.admin_url(), db.role.clone());
    moto.proxy.hook("ModifyDBCluster", move |body| {
        let Some(pw) = form_value(body, "MasterUserPassword") else { return };
        let mut child = Command::new(xtask::pg::tools::find("psql").unwrap())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &admin])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "ALTER ROLE {role} PASSWORD '{pw}';").unwrap();
        assert!(child.wait().unwrap().success());
    });
    let log = project.dir.join("forwarder.log");
    Scene { moto, db, project, log }
}

fn cluster_source() -> String {
    format!("source_cluster = \"{AURORA}\"")
}

impl Scene {
    fn args<'a>(&'a self, tunnel: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["clone-prod", "--tunnel", "command", "--tunnel-command", tunnel];
        args.extend_from_slice(extra);
        args
    }

    /// `clone-prod` through the forwarder, plus `extra` flags.
    fn clone_prod(&self, extra: &[&str]) -> Run {
        let tunnel = forwarder(&self.db, &self.log);
        let out = command(&self.moto, &self.project.dir, &self.args(&tunnel, extra), &[]).output().unwrap();
        finish(out, &[&self.db.password])
    }

    /// `clone-prod` through the forwarder, sent `signal` once a stderr line contains `when`.
    fn clone_prod_signalled(&self, when: &str, signal: i32) -> Run {
        let tunnel = forwarder(&self.db, &self.log);
        let mut cmd = command(&self.moto, &self.project.dir, &self.args(&tunnel, &[]), &[]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let start = Instant::now();
        loop {
            let line = lines.next().unwrap_or_else(|| panic!("the run ended before {when:?}:\n{seen}")).unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(when) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "never saw {when:?}:\n{seen}");
        }
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(child.id() as i32, signal) };
        for line in lines {
            seen.push_str(&line.unwrap());
            seen.push('\n');
        }
        let mut run = finish(child.wait_with_output().unwrap(), &[&self.db.password]);
        run.stderr = seen + &run.stderr;
        run
    }

    /// No clone (cluster or instance) is left, the source cluster and its instance are as they
    /// were, and no dump was written.
    async fn assert_cleaned_up(&self, run: &Run) {
        self.assert_nothing_left(run).await;
        assert_eq!(self.project.dumps(), Vec::<String>::new(), "dump/ is not empty:\n{}", run.all());
    }

    async fn assert_nothing_left(&self, run: &Run) {
        let rds = self.moto.rds();
        assert_eq!(tagged(&rds).await, Vec::<String>::new(), "an instance is left:\n{}", run.all());
        assert_eq!(tagged_clusters(&rds).await, Vec::<String>::new(), "a cluster is left:\n{}", run.all());
        assert_eq!(ids(&rds).await, vec![AURORA_INSTANCE.to_string()], "{}", run.all());
        assert_eq!(cluster_ids(&rds).await, vec![AURORA.to_string()], "{}", run.all());
        let source = rds.describe_db_clusters().db_cluster_identifier(AURORA).send().await.unwrap();
        let source = &source.db_clusters()[0];
        assert_eq!(source.deletion_protection(), Some(true));
        let members: Vec<&str> =
            source.db_cluster_members().iter().filter_map(|m| m.db_instance_identifier()).collect();
        assert_eq!(members, vec![AURORA_INSTANCE]);
        // No call but reads (and the clone's, which names it as its source) names the source.
        for c in self.moto.proxy.calls() {
            if is_mutating(&c.action) && c.action != "RestoreDBClusterToPointInTime" {
                for id in [AURORA, AURORA_INSTANCE] {
                    assert!(
                        !c.body.contains(&format!("Identifier={id}&"))
                            && !c.body.ends_with(&format!("Identifier={id}")),
                        "{c:?}"
                    );
                }
            }
        }
    }

    /// The bodies of the calls of `action`.
    fn bodies(&self, action: &str) -> Vec<String> {
        self.moto.proxy.calls().into_iter().filter(|c| c.action == action).map(|c| c.body).collect()
    }

    fn position(&self, action: &str) -> usize {
        let actions = self.moto.proxy.actions();
        actions.iter().position(|a| a == action).unwrap_or_else(|| panic!("no {action}: {actions:?}"))
    }
}

fn is_mutating(action: &str) -> bool {
    !["Describe", "List", "Get"].iter().any(|p| action.starts_with(p))
}

/// The value of `key` in a form-encoded AWS query request.
fn form_value(body: &str, key: &str) -> Option<String> {
    let raw = body.split('&').find_map(|p| p.strip_prefix(&format!("{key}=")))?;
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(String::from_utf8(out).unwrap())
}

/// A full run on an Aurora source: a copy-on-write clone of the live cluster (no snapshot) and
/// one instance in it, both tagged, a one-time password set with ModifyDBCluster, the dump
/// through the tunnel to the instance's endpoint (load-clone restores it with the source's row
/// counts), then the instance deleted and the cluster after it; the source untouched.
#[tokio::test]
async fn an_aurora_cluster_is_cloned_copy_on_write_dumped_and_deleted_instance_then_cluster() {
    let s = scene("aurorafull", &cluster_source()).await;
    let run = s.clone_prod(&["--jobs", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for line in [
        "source       Aurora cluster prod-aurora in us-east-1: Aurora PostgreSQL 15.4, instances prod-aurora-1, subnet group aurora-private, security groups sg-",
        "snapshot     none: a copy-on-write clone of the live cluster",
        "throwaway    cluster prod-aurora-clone-",
        "(db.t4g.medium: db.t4g.small is not offered for Aurora PostgreSQL",
        "one-time master password",
        "dump ready: dump/prod-",
        "deleting the throwaway instance prod-aurora-clone-",
        "deleting the throwaway cluster prod-aurora-clone-",
    ] {
        assert!(run.stderr.contains(line), "missing {line:?}:\n{}", run.stderr);
    }

    // The clone: copy-on-write of the source at its latest restorable time, in its subnet group
    // and security groups, unprotected, tagged; no snapshot taken or restored.
    let restores = s.bodies("RestoreDBClusterToPointInTime");
    assert_eq!(restores.len(), 1);
    let r = &restores[0];
    for part in [
        "DBClusterIdentifier=prod-aurora-clone-",
        "RestoreType=copy-on-write",
        "UseLatestRestorableTime=true",
        "DBSubnetGroupName=aurora-private",
        "VpcSecurityGroupIds.VpcSecurityGroupId.1=sg-",
        "DeletionProtection=false",
        "Tags.Tag.1.Key=CreatedBy&Tags.Tag.1.Value=xtask-db%20clone-prod",
        "Key=CloneOf&Tags.Tag.2.Value=prod-aurora",
        "Tags.Tag.3.Key=CreatedAt",
        "Tags.Tag.4.Key=ExpiresAt",
    ] {
        assert!(r.contains(part), "the restore lacks {part}: {r}");
    }
    assert!(!r.contains("EnableIAMDatabaseAuthentication"), "{r}");
    assert_eq!(form_value(r, "SourceDBClusterIdentifier").as_deref(), Some(AURORA), "{r}");
    let cluster = form_value(r, "DBClusterIdentifier").unwrap();
    for never in ["CreateDBSnapshot", "RestoreDBInstanceFromDBSnapshot", "ModifyDBInstance"] {
        assert!(s.bodies(never).is_empty(), "{never}: {:?}", s.moto.proxy.actions());
    }
    // Its instance: in the clone, Aurora PostgreSQL, private, the Aurora class, tagged.
    let creates = s.bodies("CreateDBInstance");
    assert_eq!(creates.len(), 1);
    let c = &creates[0];
    assert_eq!(form_value(c, "DBClusterIdentifier"), Some(cluster.clone()), "{c}");
    for part in [
        "Engine=aurora-postgresql",
        "DBInstanceClass=db.t4g.medium",
        "PubliclyAccessible=false",
        "Tags.Tag.1.Key=CreatedBy&Tags.Tag.1.Value=xtask-db%20clone-prod",
        "Key=ExpiresAt",
    ] {
        assert!(c.contains(part), "the instance's creation lacks {part}: {c}");
    }
    let instance = form_value(c, "DBInstanceIdentifier").unwrap();
    assert_eq!(instance, format!("{cluster}-1"));
    // The one-time password: on the clone, applied at once, and in no other request.
    let modify = s.bodies("ModifyDBCluster");
    assert_eq!(modify.len(), 1);
    assert_eq!(form_value(&modify[0], "DBClusterIdentifier"), Some(cluster.clone()));
    assert!(modify[0].contains("ApplyImmediately=true"), "{}", modify[0]);
    let pw = form_value(&modify[0], "MasterUserPassword").unwrap();
    assert_eq!(pw.len(), 40);
    assert!(!run.all().contains(&pw));
    for call in s.moto.proxy.calls().iter().filter(|c| c.action != "ModifyDBCluster") {
        assert!(!call.body.contains(&pw), "{call:?}");
    }
    // Deleted: the instance, then the cluster, without a final snapshot.
    let deletes = s.bodies("DeleteDBInstance");
    assert!(!deletes.is_empty(), "{:?}", s.moto.proxy.actions());
    assert!(deletes.iter().all(|d| form_value(d, "DBInstanceIdentifier").as_ref() == Some(&instance)), "{deletes:?}");
    let cluster_deletes = s.bodies("DeleteDBCluster");
    assert_eq!(cluster_deletes.len(), 1);
    assert_eq!(form_value(&cluster_deletes[0], "DBClusterIdentifier"), Some(cluster.clone()));
    assert!(cluster_deletes[0].contains("SkipFinalSnapshot=true"), "{cluster_deletes:?}");
    let order: Vec<usize> =
        ["RestoreDBClusterToPointInTime", "CreateDBInstance", "ModifyDBCluster", "DeleteDBInstance", "DeleteDBCluster"]
            .iter()
            .map(|a| s.position(a))
            .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{:?}", s.moto.proxy.actions());
    s.assert_nothing_left(&run).await;

    // The tunnel led to the instance's endpoint; every connection asked for TLS.
    let log = log_records(&s.log);
    assert!(log[0]["host"].as_str().unwrap().starts_with(&format!("{instance}.")), "{log:?}");
    let conns: Vec<&serde_json::Value> = log.iter().filter(|r| r["connection"].as_bool() == Some(true)).collect();
    assert!(conns.len() >= 2 && conns.iter().all(|c| c["ssl_request"].as_bool() == Some(true)), "{log:?}");

    // load-clone restores the dump with the source's row counts.
    assert_eq!(s.project.dumps().len(), 1, "{:?}", s.project.dumps());
    let xtask = std::env::var("XTASK_TEST_XTASK_BIN").expect("run through `cargo xtask test`");
    let out = Command::new(xtask)
        .args(["db", "load-clone"])
        .current_dir(&s.project.dir)
        .env("DATABASE_URL", s.db.server_url("postgres"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let load = finish(out, &[&s.db.password]);
    assert_eq!(load.code, 0, "{}", load.all());
    let clone_db = format!("{}prod_clone", s.project.prefix);
    let source_counts = StandIn::counts(&s.db.admin_url());
    assert_eq!(source_counts.len(), 3);
    assert!(source_counts.iter().all(|(_, n)| *n > 0));
    assert_eq!(StandIn::counts(&s.db.server_url(&clone_db)), source_counts);
    psql(&s.db.server_url("postgres"), &format!("DROP DATABASE {clone_db}"));
}

/// `source_instance` naming an instance of an Aurora cluster: its cluster is the source (the plan
/// says so), and the run is the cluster's.
#[tokio::test]
async fn a_source_instance_of_an_aurora_cluster_is_taken_as_its_cluster() {
    let s = scene("auroravia", &format!("source_instance = \"{AURORA_INSTANCE}\"")).await;
    let run = s.clone_prod(&["--jobs", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains(
            "source       Aurora cluster prod-aurora in us-east-1 (`prod-aurora-1` is one of its instances: its cluster is the source)"
        ),
        "{}",
        run.stderr
    );
    let restores = s.bodies("RestoreDBClusterToPointInTime");
    assert_eq!(restores.len(), 1, "{:?}", s.moto.proxy.actions());
    assert_eq!(form_value(&restores[0], "SourceDBClusterIdentifier").as_deref(), Some(AURORA), "{}", restores[0]);
    assert!(restores[0].contains("DBClusterIdentifier=prod-aurora-clone-"), "{}", restores[0]);
    assert_eq!(s.project.dumps().len(), 1);
    s.assert_nothing_left(&run).await;
}

#[tokio::test]
async fn a_failed_tunnel_deletes_the_aurora_instance_and_cluster() {
    let s = scene("auroranotunnel", &cluster_source()).await;
    let never = "exec sleep 600 # not listening on {local_port} for {host}";
    let args = ["clone-prod", "--tunnel", "command", "--tunnel-command", never, "--tunnel-timeout", "2"];
    let run = finish(command(&s.moto, &s.project.dir, &args, &[]).output().unwrap(), &[&s.db.password]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("did not accept connections"), "{}", run.stderr);
    assert_eq!(s.bodies("DeleteDBInstance").len(), 1, "{:?}", s.moto.proxy.actions());
    assert_eq!(s.bodies("DeleteDBCluster").len(), 1, "{:?}", s.moto.proxy.actions());
    assert!(s.position("DeleteDBInstance") < s.position("DeleteDBCluster"));
    s.assert_cleaned_up(&run).await;
}

/// SIGINT while the clone is being made (the cluster stays `creating`): the cluster is deleted;
/// no instance was asked for.
#[tokio::test]
async fn sigint_while_the_aurora_clone_is_made() {
    let s = scene("aurorasigcluster", &cluster_source()).await;
    s.moto.proxy.rule(
        "DescribeDBClusters",
        "DBClusterIdentifier=prod-aurora-clone-",
        Effect::SetElements(vec![("Status".into(), "creating".into())]),
    );
    let run = s.clone_prod_signalled("a clone takes 5-20 minutes", libc::SIGINT);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(run.stderr.contains("interrupted by SIGINT"), "{}", run.stderr);
    assert!(s.bodies("CreateDBInstance").is_empty(), "{:?}", s.moto.proxy.actions());
    assert_eq!(s.bodies("DeleteDBCluster").len(), 1, "{:?}", s.moto.proxy.actions());
    s.assert_cleaned_up(&run).await;
}

/// SIGINT while the clone's instance is being made (it stays `creating`): instance, then cluster.
#[tokio::test]
async fn sigint_while_the_aurora_instance_is_made() {
    let s = scene("aurorasiginstance", &cluster_source()).await;
    s.moto.proxy.rule(
        "DescribeDBInstances",
        "DBInstanceIdentifier=prod-aurora-clone-",
        Effect::SetElements(vec![("DBInstanceStatus".into(), "creating".into())]),
    );
    let run = s.clone_prod_signalled("an Aurora instance takes 5-15 minutes", libc::SIGINT);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(run.stderr.contains("interrupted by SIGINT"), "{}", run.stderr);
    assert!(s.bodies("ModifyDBCluster").is_empty(), "{:?}", s.moto.proxy.actions());
    assert!(s.position("DeleteDBInstance") < s.position("DeleteDBCluster"));
    s.assert_cleaned_up(&run).await;
}

/// SIGINT while the one-time password is being applied (the cluster stays
/// `resetting-master-credentials` after the ModifyDBCluster): instance, then cluster.
#[tokio::test]
async fn sigint_while_the_aurora_password_is_applied() {
    let s = scene("aurorasigpassword", &cluster_source()).await;
    s.moto.proxy.rule_after(
        "DescribeDBClusters",
        "DBClusterIdentifier=prod-aurora-clone-",
        Effect::SetElements(vec![("Status".into(), "resetting-master-credentials".into())]),
        "ModifyDBCluster",
    );
    let run = s.clone_prod_signalled("to take its one-time password", libc::SIGINT);
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(run.stderr.contains("resetting-master-credentials"), "{}", run.stderr);
    assert!(run.stderr.contains("interrupted by SIGINT"), "{}", run.stderr);
    assert!(!run.stderr.contains("opening the tunnel"), "{}", run.stderr);
    assert!(s.position("DeleteDBInstance") < s.position("DeleteDBCluster"));
    s.assert_cleaned_up(&run).await;
}

/// The cleanup reads the instance's cluster from AWS just before deleting it: an instance AWS
/// reports as a member of the source cluster is never deleted (and neither is the cluster that
/// would have to go after it); the run fails naming both manual commands.
#[tokio::test]
async fn the_cleanup_never_deletes_an_instance_aws_reports_in_the_source_cluster() {
    let s = scene("auroraguard", &cluster_source()).await;
    s.moto.proxy.rule(
        "DescribeDBInstances",
        "DBInstanceIdentifier=prod-aurora-clone-",
        Effect::SetElements(vec![("DBClusterIdentifier".into(), AURORA.into())]),
    );
    let run = s.clone_prod(&["--jobs", "1"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let error = run.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(
        error.contains("is an instance of the source cluster `prod-aurora`")
            && error.contains("the cluster `prod-aurora-clone-")
            && error
                .contains("aws rds delete-db-cluster --region us-east-1 --db-cluster-identifier prod-aurora-clone-"),
        "{}",
        run.stderr
    );
    assert!(s.bodies("DeleteDBInstance").is_empty() && s.bodies("DeleteDBCluster").is_empty());
    assert_eq!(tagged_clusters(&s.moto.rds()).await.len(), 1);
    assert_eq!(cluster_ids(&s.moto.rds()).await.len(), 2);
}

/// A source instance and a source cluster both configured: one of the problems the check lists
/// at once, before any AWS call.
#[tokio::test]
async fn a_source_instance_and_a_source_cluster_both_set_is_a_problem_listed_with_the_others() {
    let moto = Moto::start();
    let project = Project::configured("auroraboth", true, &format!("{}\n", cluster_source()));
    let run = finish(command(&moto, &project.dir, &["clone-prod", "--tunnel", "command"], &[]).output().unwrap(), &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    for part in [
        "2 problems",
        "both a source instance (`prod-db`) and a source cluster (`prod-aurora`) are given ([workspace.metadata.db.aws])",
        "keep one: `source_instance` for an RDS instance, `source_cluster` for an Aurora cluster",
        "--tunnel command needs --tunnel-command",
    ] {
        assert!(run.stderr.contains(part), "missing {part:?}:\n{}", run.stderr);
    }
    assert!(moto.proxy.calls().is_empty(), "{:?}", moto.proxy.actions());
}

fn ours(expires: &str) -> Vec<aws_sdk_rds::types::Tag> {
    vec![
        tag(OURS.0, OURS.1),
        tag("CloneOf", AURORA),
        tag("CreatedAt", "2026-01-01T00:00:00Z"),
        tag("ExpiresAt", expires),
    ]
}

async fn clone_cluster(rds: &aws_sdk_rds::Client, id: &str, tags: Vec<aws_sdk_rds::types::Tag>) {
    rds.create_db_cluster()
        .db_cluster_identifier(id)
        .engine("aurora-postgresql")
        .engine_version("15.4")
        .master_username("app")
        .master_user_password("not-a-real-password")
        .set_tags(Some(tags.clone()))
        .send()
        .await
        .unwrap();
    rds.create_db_instance()
        .db_instance_identifier(format!("{id}-1"))
        .db_cluster_identifier(id)
        .engine("aurora-postgresql")
        .db_instance_class("db.t4g.medium")
        .set_tags(Some(tags))
        .send()
        .await
        .unwrap();
}

/// `list-clones` shows our clusters with their kind, and `--prune` deletes the overdue ones, their
/// instances first — never the source cluster nor its instance, even tagged ours and overdue,
/// whether the source is named as the cluster or as one of its instances.
#[tokio::test]
async fn list_clones_shows_and_prunes_overdue_aurora_clones_never_the_source_cluster() {
    let moto = Moto::start();
    aurora_production(&moto, "app", "app").await;
    let rds = moto.rds();
    clone_cluster(&rds, "prod-aurora-clone-20260101000000", ours("2026-01-01T06:00:00Z")).await;
    clone_cluster(&rds, "prod-aurora-clone-20990101000000", ours("2099-01-01T06:00:00Z")).await;
    clone_cluster(
        &rds,
        "other-aurora",
        vec![tag("CreatedBy", "someone else"), tag("ExpiresAt", "2026-01-01T06:00:00Z")],
    )
    .await;
    // A crafted case: the source cluster and its instance carry our tag and a past expiry.
    for arn in ["cluster:prod-aurora", "db:prod-aurora-1"] {
        rds.add_tags_to_resource()
            .resource_name(format!("arn:aws:rds:us-east-1:123456789012:{arn}"))
            .set_tags(Some(ours("2026-01-01T06:00:00Z")))
            .send()
            .await
            .unwrap();
    }
    // The project names no source: each run names it by a flag.
    let project = Project::configured("auroralist", true, "");
    let toml = project.dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace(&format!("source_instance = \"{SOURCE}\"\n"), "");
    std::fs::write(&toml, text).unwrap();
    let xtask = |args: &[&str]| finish(command(&moto, &project.dir, args, &[]).output().unwrap(), &[]);

    let run = xtask(&["list-clones", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let list: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let rows: Vec<(String, String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["kind"].as_str().unwrap().into(), r["id"].as_str().unwrap().into(), r["overdue"].as_bool().unwrap())
        })
        .collect();
    let row = |k: &str, id: &str, overdue: bool| (k.to_string(), id.to_string(), overdue);
    assert_eq!(
        rows,
        vec![
            row("instance", "prod-aurora-1", true),
            row("instance", "prod-aurora-clone-20260101000000-1", true),
            row("instance", "prod-aurora-clone-20990101000000-1", false),
            row("cluster", "prod-aurora", true),
            row("cluster", "prod-aurora-clone-20260101000000", true),
            row("cluster", "prod-aurora-clone-20990101000000", false),
        ]
    );
    let clone = list.as_array().unwrap().iter().find(|r| r["id"] == "prod-aurora-clone-20260101000000").unwrap();
    assert_eq!(clone["members"], serde_json::json!(["prod-aurora-clone-20260101000000-1"]));
    let run = xtask(&["list-clones"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let line = run.stdout.lines().find(|l| l.contains("prod-aurora-clone-20260101000000 ")).unwrap();
    assert!(line.starts_with("cluster ") && line.ends_with("OVERDUE"), "{}", run.stdout);

    // --dry-run: says what it would delete and what it refuses.
    let run = xtask(&["list-clones", "--prune", "--dry-run", "--source-cluster", AURORA]);
    assert_eq!(run.code, 0, "{}", run.all());
    for part in [
        "prod-aurora-1 (refused: `prod-aurora-1` is an instance of the source cluster `prod-aurora`",
        "cluster prod-aurora (and its instances prod-aurora-1) (refused: `prod-aurora` is the source cluster",
        "cluster prod-aurora-clone-20260101000000 (and its instances prod-aurora-clone-20260101000000-1)",
    ] {
        assert!(run.stderr.contains(part), "missing {part:?}:\n{}", run.stderr);
    }
    assert_eq!(cluster_ids(&rds).await.len(), 4, "--dry-run deleted something");

    // The source named by its instance: its cluster is protected too.
    let run = xtask(&["list-clones", "--prune", "-y", "--source-instance", "PROD-AURORA-1"]);
    assert_eq!(run.code, 2, "the refused source makes the run fail: {}", run.all());
    assert!(run.stderr.contains("`prod-aurora` is the source cluster"), "{}", run.stderr);
    assert!(run.stderr.contains("is the source instance"), "{}", run.stderr);
    assert_eq!(
        cluster_ids(&rds).await,
        vec!["other-aurora", "prod-aurora", "prod-aurora-clone-20990101000000"],
        "only the overdue clone of ours is gone: {}",
        run.all()
    );
    assert_eq!(ids(&rds).await, vec!["other-aurora-1", "prod-aurora-1", "prod-aurora-clone-20990101000000-1"]);
    let actions = moto.proxy.actions();
    let first = |a: &str| actions.iter().position(|x| x == a).unwrap();
    assert!(first("DeleteDBInstance") < first("DeleteDBCluster"), "{actions:?}");
    for c in moto.proxy.calls().iter().filter(|c| c.action.starts_with("Delete") || c.action.starts_with("Modify")) {
        assert!(c.body.contains("prod-aurora-clone-20260101000000"), "{c:?}");
    }

    // Named as the cluster: refused again, nothing else deleted.
    let run = xtask(&["list-clones", "--prune", "-y", "--source-cluster", "Prod-Aurora"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("is an instance of the source cluster"), "{}", run.stderr);
    assert!(run.stderr.contains("is the source cluster"), "{}", run.stderr);
    assert_eq!(cluster_ids(&rds).await.len(), 3);
    assert_eq!(ids(&rds).await.len(), 3);
}
