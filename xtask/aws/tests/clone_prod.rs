//! `db clone-prod` end to end against moto (behind a recording, fault-injecting proxy), with the
//! test PostgreSQL server (TLS on) standing in for the restored instance, reached through the
//! `command` tunnel (a real TCP forwarder) or the `ssm` tunnel (a stand-in plugin on PATH).
//!
//! Every run is checked for the database password and the session token in its output.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// A production account, its database, and a project to run in.
struct Scene {
    moto: Moto,
    db: StandIn,
    project: Project,
    log: std::path::PathBuf,
}

async fn scene(tag: &str) -> Scene {
    let moto = Moto::start();
    let db = StandIn::create(tag);
    production(&moto, &db).await;
    let project = Project::new(tag, true);
    let log = project.dir.join("forwarder.log");
    Scene { moto, db, project, log }
}

impl Scene {
    fn command(&self, args: &[&str], env: &[(&str, String)]) -> Command {
        command(&self.moto, &self.project.dir, args, env)
    }

    /// `clone-prod` through the forwarder, plus `extra` flags.
    fn clone_prod(&self, extra: &[&str]) -> Run {
        let tunnel = forwarder(&self.db, &self.log);
        let mut args = vec!["clone-prod", "--tunnel", "command", "--tunnel-command", &tunnel];
        args.extend_from_slice(extra);
        finish(self.command(&args, &[]).output().unwrap(), &[&self.db.password])
    }

    /// Starts `clone-prod` through the forwarder, plus `extra` flags; its stderr read as it comes.
    fn start_clone_prod(&self, extra: &[&str]) -> Started {
        let tunnel = forwarder(&self.db, &self.log);
        let mut args = vec!["clone-prod", "--tunnel", "command", "--tunnel-command", &tunnel];
        args.extend_from_slice(extra);
        let mut cmd = self.command(&args, &[]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Started { child, lines, seen: String::new(), password: self.db.password.clone() }
    }

    /// Starts `clone-prod` through the forwarder, plus `extra` flags, and sends `signal` once a
    /// stderr line contains `when`; the finished run.
    fn clone_prod_signalled(&self, extra: &[&str], when: &str, signal: i32, after: Duration) -> Run {
        let mut run = self.start_clone_prod(extra);
        run.until(when);
        std::thread::sleep(after);
        run.signal(signal);
        run.finish()
    }

    /// After a failed run: exit non-zero, the throwaway deleted, no dump (not even a partial).
    async fn assert_cleaned_up(&self, run: &Run) {
        assert_ne!(run.code, 0, "{}", run.all());
        let rds = self.moto.rds();
        assert_eq!(tagged(&rds).await, Vec::<String>::new(), "a throwaway instance is left:\n{}", run.all());
        assert_eq!(ids(&rds).await, vec![SOURCE.to_string()], "{}", run.all());
        assert_eq!(self.project.dumps(), Vec::<String>::new(), "dump/ is not empty:\n{}", run.all());
    }

    /// The restore requests the proxy saw.
    fn restores(&self) -> Vec<String> {
        self.moto
            .proxy
            .calls()
            .into_iter()
            .filter(|c| c.action == "RestoreDBInstanceFromDBSnapshot")
            .map(|c| c.body)
            .collect()
    }
}

/// A `clone-prod` run under way.
struct Started {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
    seen: String,
    password: String,
}

impl Started {
    /// Reads stderr up to the first line that contains `when`.
    fn until(&mut self, when: &str) {
        let start = Instant::now();
        loop {
            let line =
                self.lines.next().unwrap_or_else(|| panic!("the run ended before {when:?}:\n{}", self.seen)).unwrap();
            self.seen.push_str(&line);
            self.seen.push('\n');
            if line.contains(when) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "never saw {when:?}:\n{}", self.seen);
        }
    }

    fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// The rest of the run, checked for secrets.
    fn finish(mut self) -> Run {
        for line in self.lines.by_ref() {
            self.seen.push_str(&line.unwrap());
            self.seen.push('\n');
        }
        let out = self.child.wait_with_output().unwrap();
        let mut run = finish(out, &[&self.password]);
        run.stderr = std::mem::take(&mut self.seen) + &run.stderr;
        assert!(!run.stderr.contains(&self.password) && !run.stderr.contains(TOKEN));
        run
    }
}

fn is_mutating(action: &str) -> bool {
    !["Describe", "List", "Get"].iter().any(|p| action.starts_with(p))
}

#[tokio::test]
async fn full_run_dumps_what_load_clone_restores_with_the_same_counts_and_leaves_no_instance() {
    let s = scene("full").await;
    // One `pg_dump -Fc` file (the default directory dump: `a_parallel_dump_…`).
    let run = s.clone_prod(&["--jobs", "1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for line in [
        "snapshot     reuse rds:prod-db",
        "throwaway    prod-db-clone-",
        "dump ready: dump/prod-",
        "deletion requested",
    ] {
        assert!(run.stderr.contains(line), "missing {line:?}:\n{}", run.stderr);
    }

    // The restore asked for a private, single-AZ, backup-less, unprotected gp3 instance in the
    // source's subnet group and security groups, tagged.
    let restores = s.restores();
    assert_eq!(restores.len(), 1);
    let r = &restores[0];
    for part in [
        "DBInstanceIdentifier=prod-db-clone-",
        "DBSnapshotIdentifier=rds%3Aprod-db",
        "DBInstanceClass=db.t4g.small",
        "DBSubnetGroupName=prod-private",
        "VpcSecurityGroupIds.VpcSecurityGroupId.1=sg-",
        "PubliclyAccessible=false",
        "MultiAZ=false",
        "BackupRetentionPeriod=0",
        "DeletionProtection=false",
        "StorageType=gp3",
        "Value=xtask-db%20clone-prod",
        "Key=CloneOf&Tags.Tag.2.Value=prod-db",
        "Key=ExpiresAt",
    ] {
        assert!(r.contains(part), "the restore lacks {part}: {r}");
    }
    let clone_id = r.split('&').find_map(|p| p.strip_prefix("DBInstanceIdentifier=")).unwrap().to_string();
    // Deleted without a final snapshot. (moto copies the source's deletion protection onto the
    // restore whatever the request says, so the deletion switches it off first: on the clone.)
    let calls = s.moto.proxy.calls();
    let deletes: Vec<&str> = calls.iter().filter(|c| c.action == "DeleteDBInstance").map(|c| c.body.as_str()).collect();
    assert!(!deletes.is_empty());
    assert!(
        deletes
            .iter()
            .all(|d| d.contains(&format!("DBInstanceIdentifier={clone_id}&")) && d.contains("SkipFinalSnapshot=true")),
        "{deletes:?}"
    );
    // No call but the snapshot's (and reads) ever names the source instance.
    for c in calls.iter().filter(|c| is_mutating(&c.action) && c.action != "CreateDBSnapshot") {
        assert!(!c.body.contains("Identifier=prod-db&") && !c.body.ends_with("Identifier=prod-db"), "{c:?}");
    }
    assert_eq!(tagged(&s.moto.rds()).await, Vec::<String>::new());
    assert_eq!(ids(&s.moto.rds()).await, vec![SOURCE]);

    // The forwarder was given the clone's endpoint, and every connection asked for TLS.
    let log = log_records(&s.log);
    assert!(
        log[0]["expect_host_ok"].as_bool().unwrap() && log[0]["host"].as_str().unwrap().starts_with(&clone_id),
        "{log:?}"
    );
    let conns: Vec<&serde_json::Value> = log.iter().filter(|r| r["connection"].as_bool() == Some(true)).collect();
    assert!(conns.len() >= 2, "psql and pg_dump went through the tunnel: {log:?}");
    assert!(conns.iter().all(|c| c["ssl_request"].as_bool() == Some(true)), "{log:?}");

    // The dump: complete, private.
    let dumps = s.project.dumps();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    assert!(dumps[0].starts_with("prod-") && dumps[0].ends_with(".dump"), "{dumps:?}");
    let path = s.project.dump_dir().join(&dumps[0]);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // load-clone restores it with the source's row counts.
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

#[tokio::test]
async fn direct_tunnel_connects_to_the_endpoint() {
    let s = scene("direct").await;
    // The clone's endpoint, as AWS reports it, is the test server.
    s.moto.proxy.rule(
        "DescribeDBInstances",
        "DBInstanceIdentifier=prod-db-clone-",
        Effect::SetElements(vec![("Address".into(), "127.0.0.1".into()), ("Port".into(), s.db.port.to_string())]),
    );
    let run = finish(s.command(&["clone-prod", "--tunnel", "direct"], &[]).output().unwrap(), &[&s.db.password]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("tunnel       direct"), "{}", run.stderr);
    assert_eq!(s.project.dumps().len(), 1);
    assert!(tagged(&s.moto.rds()).await.is_empty());
}

#[tokio::test]
async fn a_stale_snapshot_or_fresh_snapshot_creates_one_tagged() {
    let s = scene("fresh").await;
    // Stale: the automated snapshot is older than --freshness-hours 0. Then forced.
    for (i, flags) in [["--freshness-hours", "0"].as_slice(), ["--fresh-snapshot"].as_slice()].into_iter().enumerate() {
        let run = s.clone_prod(flags);
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(run.stderr.contains("snapshot     create prod-db-xtask-"), "{flags:?}: {}", run.stderr);
        let creates: Vec<String> =
            s.moto.proxy.calls().into_iter().filter(|c| c.action == "CreateDBSnapshot").map(|c| c.body).collect();
        assert_eq!(creates.len(), i + 1, "{flags:?}");
        assert!(creates[i].contains("Value=xtask-db%20clone-prod"), "{}", creates[i]);
        let snapshot = creates[i].split('&').find_map(|p| p.strip_prefix("DBSnapshotIdentifier=")).unwrap().to_string();
        assert!(s.restores()[i].contains(&format!("DBSnapshotIdentifier={snapshot}")), "the new snapshot was restored");
        assert!(tagged(&s.moto.rds()).await.is_empty());
        // Runs in the same second would share a name.
        std::thread::sleep(Duration::from_millis(1100));
    }
}

#[tokio::test]
async fn snapshot_creation_fails() {
    let s = scene("snapfail").await;
    s.moto.proxy.rule(
        "CreateDBSnapshot",
        "",
        Effect::Fail {
            code: "SnapshotQuotaExceeded".into(),
            message: "Cannot create more than 100 manual snapshots".into(),
        },
    );
    let run = s.clone_prod(&["--fresh-snapshot"]);
    s.assert_cleaned_up(&run).await;
    assert!(
        run.stderr.contains("SnapshotQuotaExceeded") && run.stderr.contains("creating the snapshot"),
        "{}",
        run.stderr
    );
    assert!(s.restores().is_empty(), "nothing was restored after the failure");
}

#[tokio::test]
async fn restore_fails() {
    let s = scene("restorefail").await;
    // The restore is accepted, then the instance ends in a state it does not come back from.
    s.moto.proxy.rule(
        "DescribeDBInstances",
        "DBInstanceIdentifier=prod-db-clone-",
        Effect::Rewrite {
            from: "<DBInstanceStatus>available<".into(),
            to: "<DBInstanceStatus>incompatible-restore<".into(),
        },
    );
    let run = s.clone_prod(&[]);
    s.assert_cleaned_up(&run).await;
    assert!(run.stderr.contains("incompatible-restore"), "{}", run.stderr);
    assert_eq!(s.restores().len(), 1);
    assert!(s.moto.proxy.actions().contains(&"DeleteDBInstance".to_string()));
}

/// The restore request does its work but its answer is lost (a 500 after moto restored): the
/// request is not retried — a retry would meet its own instance as "already exists", which a
/// run takes for another run's and leaves — so the run fails, and the instance it made is deleted.
#[tokio::test]
async fn a_lost_answer_to_the_restore_still_deletes_what_it_made() {
    let s = scene("lostanswer").await;
    s.moto.proxy.rule_times(
        "RestoreDBInstanceFromDBSnapshot",
        "",
        Effect::LostAnswer { code: "InternalFailure".into() },
        1,
    );
    let run = s.clone_prod(&[]);
    s.assert_cleaned_up(&run).await;
    assert_eq!(s.restores().len(), 1, "the restore request was sent once");
    assert!(run.stderr.contains("InternalFailure"), "{}", run.stderr);
}

#[tokio::test]
async fn an_instance_of_another_run_with_the_same_id_is_not_deleted() {
    let s = scene("samesecond").await;
    s.moto.proxy.rule(
        "RestoreDBInstanceFromDBSnapshot",
        "",
        Effect::Fail { code: "DBInstanceAlreadyExists".into(), message: "DB instance already exists".into() },
    );
    let run = s.clone_prod(&[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("DBInstanceAlreadyExists"), "{}", run.stderr);
    assert!(!s.moto.proxy.actions().contains(&"DeleteDBInstance".to_string()), "{:?}", s.moto.proxy.actions());
    assert!(s.project.dumps().is_empty());
}

#[tokio::test]
async fn the_tunnel_never_comes_up() {
    let s = scene("notunnel").await;
    let pidfile = s.project.dir.join("tunnel.pid");
    // A forwarder that never listens on the port it is given.
    let never =
        format!("echo $$ > {}; exec sleep 600 # not listening on {{local_port}} for {{host}}", pidfile.display());
    let run = finish(
        s.command(&["clone-prod", "--tunnel", "command", "--tunnel-command", &never, "--tunnel-timeout", "2"], &[])
            .output()
            .unwrap(),
        &[&s.db.password],
    );
    s.assert_cleaned_up(&run).await;
    assert!(
        run.stderr.contains("did not accept connections") && run.stderr.contains("--tunnel-timeout"),
        "{}",
        run.stderr
    );
    // The forwarder was stopped too.
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the tunnel command still runs");
}

#[tokio::test]
async fn pg_dump_fails() {
    let s = scene("dumpfail").await;
    // A table the dump user may not read (created by the superuser): pg_dump fails on it.
    psql(&s.db.admin_url(), "CREATE TABLE public.secrets (x int); INSERT INTO public.secrets VALUES (1)");
    let run = s.clone_prod(&[]);
    s.assert_cleaned_up(&run).await;
    assert!(run.stderr.contains("pg_dump failed") && run.stderr.contains("permission denied"), "{}", run.stderr);
}

#[tokio::test]
async fn sigint_during_the_restore_wait() {
    let s = scene("sigint").await;
    // The instance stays `creating`: the run waits until interrupted.
    s.moto.proxy.rule(
        "DescribeDBInstances",
        "DBInstanceIdentifier=prod-db-clone-",
        Effect::Rewrite { from: "<DBInstanceStatus>available<".into(), to: "<DBInstanceStatus>creating<".into() },
    );
    let run = s.clone_prod_signalled(&[], "to be available", libc::SIGINT, Duration::from_millis(300));
    s.assert_cleaned_up(&run).await;
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(run.stderr.contains("interrupted by SIGINT"), "{}", run.stderr);
    assert!(s.moto.proxy.actions().contains(&"DeleteDBInstance".to_string()));
}

#[tokio::test]
async fn sigterm_during_the_dump() {
    let s = scene("sigterm").await;
    // Hold a lock pg_dump must wait for, so the dump is in progress when the signal comes.
    let mut locker = Command::new(xtask::pg::tools::find("psql").unwrap())
        .args(["-X", "-q", "-d", &s.db.admin_url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = locker.stdin.take().unwrap();
    writeln!(stdin, "BEGIN; LOCK TABLE crm.orders IN ACCESS EXCLUSIVE MODE; SELECT 1;").unwrap();
    stdin.flush().unwrap();
    let run = s.clone_prod_signalled(&["--jobs", "1"], "with pg_dump -Fc", libc::SIGTERM, Duration::from_millis(1500));
    drop(stdin);
    let _ = locker.wait();
    s.assert_cleaned_up(&run).await;
    assert_eq!(run.code, 143, "{}", run.all());
    assert!(run.stderr.contains("interrupted by SIGTERM"), "{}", run.stderr);
}

/// The default dump: a directory, several tables at a time, each over a connection of its own
/// through the tunnel; private; the password in no process's command line; restored by
/// `load-clone` with the source's row counts.
#[tokio::test]
async fn a_parallel_dump_crosses_the_tunnel_on_several_connections_and_load_clone_restores_it() {
    let s = scene("pardump").await;
    // Hold a lock pg_dump waits for, so that its command line can be read while it runs.
    let mut locker = Command::new(xtask::pg::tools::find("psql").unwrap())
        .args(["-X", "-q", "-d", &s.db.admin_url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = locker.stdin.take().unwrap();
    writeln!(stdin, "BEGIN; LOCK TABLE crm.orders IN ACCESS EXCLUSIVE MODE; SELECT 1;").unwrap();
    stdin.flush().unwrap();
    let mut started = s.start_clone_prod(&["--jobs", "2"]);
    started.until("with pg_dump -Fd -j 2");
    std::thread::sleep(Duration::from_millis(1000));
    let cmdlines = all_cmdlines();
    assert!(cmdlines.contains("--format=directory --jobs=2"), "pg_dump -Fd -j 2 is running");
    assert!(!cmdlines.contains(&s.db.password), "the password is in a command line");
    drop(stdin);
    let _ = locker.wait();
    let run = started.finish();
    assert_eq!(run.code, 0, "{}", run.all());
    for line in
        ["dump         dump/prod-", "(a directory: pg_dump -Fd -j 2)", "dump ready: dump/prod-", "deletion requested"]
    {
        assert!(run.stderr.contains(line), "missing {line:?}:\n{}", run.stderr);
    }
    assert_eq!(tagged(&s.moto.rds()).await, Vec::<String>::new());

    // psql's probe, pg_dump's leader and its two workers: each its own connection, with TLS.
    let log = log_records(&s.log);
    let conns: Vec<&serde_json::Value> = log.iter().filter(|r| r["connection"].as_bool() == Some(true)).collect();
    assert!(conns.len() >= 4, "the probe, pg_dump and two workers went through the tunnel: {log:?}");
    assert!(conns.iter().all(|c| c["ssl_request"].as_bool() == Some(true)), "{log:?}");

    // The dump: a complete directory (its table of contents and a file per table), private, and
    // nothing partial beside it.
    let dumps = s.project.dumps();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    assert!(dumps[0].starts_with("prod-") && dumps[0].ends_with(".dump"), "{dumps:?}");
    let path = s.project.dump_dir().join(&dumps[0]);
    assert!(path.is_dir() && path.join("toc.dat").is_file(), "{}", path.display());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
    let files: Vec<_> = std::fs::read_dir(&path).unwrap().flatten().collect();
    assert!(files.len() >= 4, "toc.dat and a file per table: {files:?}");
    for f in &files {
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{:?}", f.path());
    }

    // load-clone restores it with the source's row counts.
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
    assert!(load.stderr.contains(&dumps[0]), "{}", load.stderr);
    let clone_db = format!("{}prod_clone", s.project.prefix);
    let source_counts = StandIn::counts(&s.db.admin_url());
    assert_eq!(source_counts.len(), 3);
    assert!(source_counts.iter().all(|(_, n)| *n > 0));
    assert_eq!(StandIn::counts(&s.db.server_url(&clone_db)), source_counts);
    psql(&s.db.server_url("postgres"), &format!("DROP DATABASE {clone_db}"));
}

/// SIGTERM while pg_dump's workers write the directory: the partial directory goes with
/// everything in it, and the throwaway with it.
#[tokio::test]
async fn sigterm_during_a_parallel_dump_leaves_no_partial_directory() {
    let s = scene("sigtermdir").await;
    // Enough data that the workers write for a while.
    s.db.as_owner(
        "INSERT INTO public.events (payload) SELECT jsonb_build_object('n', g, 'text', md5(g::text), 'more', md5((-g)::text)) FROM generate_series(1, 1000000) g",
    );
    let mut started = s.start_clone_prod(&["--jobs", "2"]);
    started.until("with pg_dump -Fd -j 2");
    // Signalled once a worker has begun a table's file in the partial directory.
    let start = Instant::now();
    let partial = loop {
        let dumps = s.project.dumps();
        if let Some(p) = dumps.iter().find(|d| d.starts_with(".prod-") && d.ends_with(".dump.partial")) {
            let p = s.project.dump_dir().join(p);
            let data = std::fs::read_dir(&p).map(|d| d.flatten().any(|e| e.file_name() != "toc.dat")).unwrap_or(false);
            if data {
                break p;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no data file appeared: {dumps:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    started.signal(libc::SIGTERM);
    assert_eq!(std::fs::metadata(&partial).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o700), 0o700);
    let run = started.finish();
    s.assert_cleaned_up(&run).await;
    assert_eq!(run.code, 143, "{}", run.all());
    assert!(run.stderr.contains("interrupted by SIGTERM"), "{}", run.stderr);
    assert!(!run.stderr.contains("dump ready"), "the signal came during the dump: {}", run.stderr);
}

#[tokio::test]
async fn deletion_is_retried_while_aws_refuses_it() {
    let s = scene("delretry").await;
    let busy = || Effect::Fail {
        code: "InvalidDBInstanceState".into(),
        message: "Instance prod-db-clone-x is not in available state.".into(),
    };
    s.moto.proxy.rule_times("DeleteDBInstance", "", busy(), 2);
    let run = s.clone_prod(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stderr.matches("cannot be deleted yet").count(), 2, "{}", run.stderr);
    assert!(tagged(&s.moto.rds()).await.is_empty());
}

#[tokio::test]
async fn a_deletion_that_finally_fails_prints_the_manual_command() {
    let s = scene("delfail").await;
    s.moto.proxy.rule(
        "DeleteDBInstance",
        "",
        Effect::Fail { code: "AccessDenied".into(), message: "not authorized to perform rds:DeleteDBInstance".into() },
    );
    let run = s.clone_prod(&[]);
    assert_eq!(run.code, 2, "{}", run.all());
    let left = tagged(&s.moto.rds()).await;
    assert_eq!(left.len(), 1, "{}", run.all());
    let manual = format!(
        "aws rds delete-db-instance --region us-east-1 --db-instance-identifier {} --skip-final-snapshot --delete-automated-backups",
        left[0]
    );
    let error = run.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(
        error.contains("AccessDenied") && error.ends_with(&format!("— delete it by hand: {manual}")),
        "{}",
        run.stderr
    );
    // The dump itself was made: the run fails only because the instance is left.
    assert_eq!(s.project.dumps().len(), 1);
}

/// A directory with a stand-in `session-manager-plugin`.
fn plugin_dir(s: &Scene) -> std::path::PathBuf {
    let bin = s.project.dir.join("plugin-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("session-manager-plugin");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nexec {} {} plugin \"$@\"\n",
            venv_bin().join("python3").display(),
            standin_script().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[tokio::test]
async fn ssm_tunnel_follows_the_plugin_contract_and_ends_the_session() {
    let s = scene("ssm").await;
    let bin = plugin_dir(&s);
    let report = s.project.dir.join("plugin-report.json");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let env = [
        ("PATH", path),
        ("STANDIN_REPORT", report.display().to_string()),
        ("STANDIN_FORWARD_TO", format!("127.0.0.1:{}", s.db.port)),
        ("STANDIN_LOG", s.log.display().to_string()),
    ];
    // Credentials from Secrets Manager this time.
    let run = finish(
        s.command(&["clone-prod", "--tunnel", "ssm", "--credentials-secret", SECRET], &env).output().unwrap(),
        &[&s.db.password],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(s.project.dumps().len(), 1);
    assert!(tagged(&s.moto.rds()).await.is_empty());

    // StartSession: on the bastion (found by its Name tag), the port-forwarding document, the
    // clone's endpoint.
    let calls = s.moto.proxy.calls();
    let start = calls.iter().find(|c| c.action == "StartSession").expect("StartSession was called");
    let start: serde_json::Value = serde_json::from_str(&start.body).unwrap();
    let bastion = {
        let out = s.moto.ec2().describe_instances().send().await.unwrap();
        out.reservations()[0].instances()[0].instance_id().unwrap().to_string()
    };
    assert_eq!(start["Target"], bastion.as_str());
    assert_eq!(start["DocumentName"], "AWS-StartPortForwardingSessionToRemoteHost");
    assert!(start["Parameters"]["host"][0].as_str().unwrap().starts_with("prod-db-clone-"), "{start}");
    assert_eq!(start["Parameters"]["portNumber"][0], "5432");

    // The plugin got the CLI's argument contract, the token only through the environment; it
    // was stopped with SIGINT, and the session was also terminated through the API.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(report["region"], REGION);
    assert_eq!(report["request"]["Target"], bastion.as_str());
    assert_eq!(report["endpoint"], s.moto.proxy.url.as_str());
    assert_eq!(report["token_in_env"], true);
    assert_eq!(report["signal"], "SIGINT", "{report}");
    let terminate = calls.iter().find(|c| c.action == "TerminateSession").expect("TerminateSession was called");
    assert!(terminate.body.contains(report["session_id"].as_str().unwrap()), "{}", terminate.body);
    let conns: Vec<serde_json::Value> = log_records(&s.log).into_iter().filter(|r| r["connection"] == true).collect();
    assert!(!conns.is_empty() && conns.iter().all(|c| c["ssl_request"] == true), "{conns:?}");
}

#[tokio::test]
async fn missing_plugin_is_a_clear_error_before_anything_is_created() {
    let s = scene("noplugin").await;
    let empty = s.project.dir.join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    // PATH without the plugin (sh and git are found by absolute path lookups of their own).
    let path = format!("{}:/usr/bin:/bin", empty.display());
    let run =
        finish(s.command(&["clone-prod", "--tunnel", "ssm"], &[("PATH", path)]).output().unwrap(), &[&s.db.password]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("`session-manager-plugin` is not on PATH") && run.stderr.contains("install"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{}", run.stderr);
    assert!(s.moto.proxy.calls().is_empty(), "no AWS call at all: {:?}", s.moto.proxy.actions());
}

#[tokio::test]
async fn dry_run_changes_nothing_in_aws() {
    let s = scene("dryrun").await;
    let rds = s.moto.rds();
    let (instances, snapshots) = (ids(&rds).await, snapshot_ids(&rds).await);
    let run = s.clone_prod(&["--dry-run", "--fresh-snapshot"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for line in [
        "snapshot     create prod-db-xtask-",
        "throwaway    prod-db-clone-",
        "dump         dump/prod-",
        // The default: a directory, four tables at a time.
        ".dump (a directory: pg_dump -Fd -j 4)",
        "dry run: nothing was created",
    ] {
        assert!(run.stderr.contains(line), "missing {line:?}:\n{}", run.stderr);
    }
    assert_eq!(ids(&rds).await, instances);
    assert_eq!(snapshot_ids(&rds).await, snapshots);
    let mutating: Vec<String> = s.moto.proxy.actions().into_iter().filter(|a| is_mutating(a)).collect();
    assert!(mutating.is_empty(), "mutating calls in a dry run: {mutating:?}");
    // Not even the credentials are read.
    assert!(!s.moto.proxy.actions().iter().any(|a| a == "GetParameter"), "{:?}", s.moto.proxy.actions());
    assert!(s.project.dumps().is_empty());
}

#[tokio::test]
async fn refuses_a_dump_directory_git_would_commit() {
    let moto = Moto::start();
    let project = Project::new("notignored", false);
    let run = finish(command(&moto, &project.dir, &["clone-prod", "--tunnel", "direct"], &[]).output().unwrap(), &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("dump is not git-ignored") && run.stderr.contains("add `/dump/` to .gitignore"),
        "{}",
        run.stderr
    );
    assert!(moto.proxy.calls().is_empty(), "{:?}", moto.proxy.actions());
}

#[tokio::test]
async fn bad_credentials_and_sources_are_clear_errors_before_anything_is_created() {
    let s = scene("badcreds").await;
    // A malformed parameter: named, its content not shown.
    s.moto
        .ssm()
        .put_parameter()
        .name("/prod/db/broken")
        .value("{\"username\":\"x\",\"password\":\"hunter2-in-json\"")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let run = s.clone_prod(&["--credentials-parameter", "/prod/db/broken"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("/prod/db/broken") && run.stderr.contains("not valid JSON"), "{}", run.stderr);
    assert!(!run.all().contains("hunter2-in-json"));
    // A missing parameter, a missing source instance.
    let run = s.clone_prod(&["--credentials-parameter", "/no/such"]);
    assert!(run.code == 2 && run.stderr.contains("ParameterNotFound"), "{}", run.all());
    let run = s.clone_prod(&["--source-instance", "no-such-db"]);
    assert!(run.code == 2 && run.stderr.contains("`no-such-db` does not exist"), "{}", run.all());
    let mutating: Vec<String> = s.moto.proxy.actions().into_iter().filter(|a| is_mutating(a)).collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    assert!(s.project.dumps().is_empty());
}

const MASK_KEY: &str = "the-masking-key-of-this-test-run";

impl Scene {
    /// Rules for the stand-in's schema, in the project's configuration.
    fn with_mask_rules(&self) {
        let path = self.project.dir.join("Cargo.toml");
        let mut toml = std::fs::read_to_string(&path).unwrap();
        toml.push_str(
            "\n[workspace.metadata.db.mask.rules]\n\"crm.customer.*\" = \"keep\"\n\"crm.customer.name\" = \"name\"\n\
             \"crm.customer.email\" = \"email\"\n\"crm.orders.*\" = \"keep\"\n\"public.events.*\" = \"keep\"\n",
        );
        std::fs::write(path, toml).unwrap();
    }

    /// `clone-prod` through the forwarder with the masking key in the environment.
    fn clone_prod_keyed(&self, extra: &[&str]) -> Run {
        let tunnel = forwarder(&self.db, &self.log);
        let mut args = vec!["clone-prod", "--tunnel", "command", "--tunnel-command", &tunnel];
        args.extend_from_slice(extra);
        let out = self.command(&args, &[("XTASK_MASK_KEY", MASK_KEY.to_string())]).output().unwrap();
        finish(out, &[&self.db.password, MASK_KEY])
    }
}

/// Every value of the stand-in's masked columns.
fn personal(url: &str) -> Vec<String> {
    psql(url, "SELECT name FROM crm.customer UNION ALL SELECT email FROM crm.customer")
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn masking_runs_on_the_throwaway_before_the_dump_and_load_clone_mask_gives_the_same_values() {
    let s = scene("mask").await;
    s.with_mask_rules();
    // The application's trigger: masking must not fire it, and must leave it enabled. (The
    // stand-in's owner may not set session_replication_role: the owner's way is taken.)
    s.db.as_owner(
        "CREATE TABLE crm.changes (id serial PRIMARY KEY, customer bigint);
         CREATE FUNCTION crm.note_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO crm.changes (customer) VALUES (NEW.id); RETURN NEW; END $$;
         CREATE TRIGGER customer_changed AFTER UPDATE ON crm.customer FOR EACH ROW EXECUTE FUNCTION crm.note_change();",
    );
    let path = s.project.dir.join("Cargo.toml");
    let toml = std::fs::read_to_string(&path).unwrap() + "\"crm.changes.*\" = \"keep\"\n";
    std::fs::write(&path, toml).unwrap();
    let originals = personal(&s.db.admin_url());
    assert_eq!(originals.len(), 1000);

    // Rules but no key: refused before anything is created.
    let run = s.clone_prod(&[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("no masking key: `XTASK_MASK_KEY` is not set"), "{}", run.stderr);
    assert_eq!(ids(&s.moto.rds()).await, vec![SOURCE.to_string()]);

    // --unmasked: production as it is (loudly), for the comparison below.
    let run = s.clone_prod_keyed(&["--unmasked"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("masking      NONE"), "{}", run.stderr);
    let unmasked = s.project.dumps().pop().unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // the next dump's timestamp differs

    // Masked at the source: the dump never holds an original value.
    let run = s.clone_prod_keyed(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("masking 2 column(s) on the throwaway instance"), "{}", run.stderr);
    assert!(run.stderr.contains("deletion requested"), "{}", run.stderr);
    let masked_dump = s.project.dumps().into_iter().find(|d| *d != unmasked).unwrap();
    let sql = Command::new(xtask::pg::tools::find("pg_restore").unwrap())
        .args(["-f", "-"])
        .arg(s.project.dump_dir().join(&masked_dump))
        .output()
        .unwrap();
    assert!(sql.status.success());
    let text = String::from_utf8_lossy(&sql.stdout);
    assert!(text.contains("@example.com") && text.contains("user_"), "the masked values are in it");
    assert!(!text.contains(MASK_KEY), "the key is in no file");
    for o in &originals {
        // Names as whole fields (a made-up name may contain a short original's letters).
        assert!(
            !text.contains(&format!("\t{o}\t")) && !text.contains(&format!("\t{o}\n")),
            "{o:?} is in the masked dump"
        );
    }
    let at_source = personal(&s.db.admin_url());
    assert!(at_source.iter().all(|v| !originals.contains(v)));
    assert_eq!(psql(&s.db.admin_url(), "SELECT count(*) FROM crm.changes"), "0", "the trigger did not fire");
    assert_eq!(
        psql(&s.db.admin_url(), "SELECT tgenabled FROM pg_trigger WHERE tgname = 'customer_changed'"),
        "O",
        "and it is enabled again, in the dump too"
    );
    assert!(!text.contains("DISABLE TRIGGER"), "the dump has the trigger as it was");

    // load-clone --mask of the unmasked dump: the same values as masking at the source.
    let xtask = std::env::var("XTASK_TEST_XTASK_BIN").expect("run through `cargo xtask test`");
    let out = Command::new(xtask)
        .args(["db", "load-clone", "--mask"])
        .arg(s.project.dump_dir().join(&unmasked))
        .current_dir(&s.project.dir)
        .env("DATABASE_URL", s.db.server_url("postgres"))
        .env("XTASK_MASK_KEY", MASK_KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let load = finish(out, &[&s.db.password, MASK_KEY]);
    assert_eq!(load.code, 0, "{}", load.all());
    let clone_db = format!("{}prod_clone", s.project.prefix);
    let order = "SELECT string_agg(name || ' ' || email, ',' ORDER BY id) FROM crm.customer";
    assert_eq!(psql(&s.db.server_url(&clone_db), order), psql(&s.db.admin_url(), order));
    psql(&s.db.server_url("postgres"), &format!("DROP DATABASE {clone_db}"));
}

#[tokio::test]
async fn an_unreviewed_column_at_the_source_stops_the_run_and_the_throwaway_is_deleted() {
    let s = scene("maskstrict").await;
    s.with_mask_rules();
    // A column by its name, and one by its content: a `*`-kept jsonb holding e-mail addresses.
    s.db.as_owner(
        "ALTER TABLE crm.customer ADD COLUMN phone text;
         ALTER TABLE crm.orders ADD COLUMN contact jsonb;
         UPDATE crm.orders SET contact = jsonb_build_object('mail', 'buyer' || id || '@corp.example.org');",
    );
    let run = s.clone_prod_keyed(&[]);
    assert!(
        run.stderr.contains("unreviewed column crm.customer.phone (text): add  \"crm.customer.phone\" = \"phone\""),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("unreviewed column crm.orders.contact (jsonb) holds e-mail addresses in")
            && run.stderr.contains("add  \"crm.orders.contact\" = \"null\""),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing was masked or dumped"), "{}", run.stderr);
    s.assert_cleaned_up(&run).await;
}

#[tokio::test]
async fn the_masking_key_can_come_from_an_ssm_parameter_and_never_shows() {
    let s = scene("maskssm").await;
    s.with_mask_rules();
    let path = s.project.dir.join("Cargo.toml");
    let toml = std::fs::read_to_string(&path).unwrap().replace(
        "[workspace.metadata.db.mask.rules]",
        "[workspace.metadata.db.mask]\nkey_parameter = \"/prod/mask-key\"\n\n[workspace.metadata.db.mask.rules]",
    );
    std::fs::write(&path, toml).unwrap();
    s.moto
        .ssm()
        .put_parameter()
        .name("/prod/mask-key")
        .value(MASK_KEY)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let originals = personal(&s.db.admin_url());
    // No key in the environment: the parameter's is used (and `finish` checks it never shows).
    let run = s.clone_prod(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("key from SSM parameter `/prod/mask-key`"), "{}", run.stderr);
    assert!(!run.all().contains(MASK_KEY));
    let masked = personal(&s.db.admin_url());
    assert!(masked.iter().all(|v| !originals.contains(v)), "masked with the parameter's key");
    // The same key as masking with it from the environment gives (keyed, deterministic).
    let expected: String = xtask::mask::keyed_hash(MASK_KEY.as_bytes(), b"c1@example.com")[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(masked.contains(&format!("user_{expected}@example.com")), "{:?}", &masked[500..503]);
}

/// Every process's command line, as `/proc/*/cmdline` shows it to anyone on the machine.
fn all_cmdlines() -> String {
    let mut all = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&c).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

#[tokio::test]
async fn sigterm_while_masking_deletes_the_throwaway_leaves_no_dump_and_the_key_is_in_no_command_line() {
    let s = scene("maskint").await;
    s.with_mask_rules();
    // Enough rows that the masking takes a while.
    s.db.as_owner(
        "INSERT INTO crm.customer (name, email) SELECT 'bulk ' || g, 'bulk' || g || '@example.com' FROM generate_series(1, 400000) g",
    );
    let tunnel = forwarder(&s.db, &s.log);
    let mut cmd = s.command(
        &["clone-prod", "--tunnel", "command", "--tunnel-command", &tunnel],
        &[("XTASK_MASK_KEY", MASK_KEY.to_string())],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        let line = lines.next().expect("the run ended before masking").unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("masking 2 column(s) on the throwaway instance") {
            break;
        }
    }
    // While the masking psql runs: the key is in no process's command line.
    std::thread::sleep(Duration::from_millis(200));
    let cmdlines = all_cmdlines();
    assert!(!cmdlines.contains(MASK_KEY) && !cmdlines.contains(&s.db.password), "a secret is in a command line");
    assert!(cmdlines.contains("xtask-db%20clone-prod") || cmdlines.contains("psql"), "the masking psql was running");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    let mut run = finish(out, &[&s.db.password, MASK_KEY]);
    run.stderr = seen + &run.stderr;
    assert_eq!(run.code, 143, "{}", run.all());
    assert!(!run.stderr.contains("masked in"), "the signal came during the masking: {}", run.stderr);
    s.assert_cleaned_up(&run).await;
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

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_containing(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) {
            found.push(p.display().to_string());
        }
    }
    found
}

/// Every process's command line, sampled every 5 ms from [`Cmdlines::sample`] to
/// [`Cmdlines::seen`] (a run's short-lived psql and pg_dump included).
struct Cmdlines {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<String>,
}

impl Cmdlines {
    fn sample() -> Cmdlines {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = String::new();
            while !flag.load(Ordering::Relaxed) {
                seen.push_str(&all_cmdlines());
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        Cmdlines { stop, thread }
    }

    fn seen(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// What AWS does on ModifyDBInstance, done to the stand-in: its master password set (through
/// psql's stdin, not its argv). The passwords set, in order.
fn set_master_passwords(moto: &Moto, db: &StandIn) -> Arc<Mutex<Vec<String>>> {
    let set: Arc<Mutex<Vec<String>>> = Default::default();
    let (admin, role, seen) = (db.admin_url(), db.role.clone(), set.clone());
    moto.proxy.hook("ModifyDBInstance", move |body| {
        let Some(pw) = form_value(body, "MasterUserPassword") else { return };
        let mut child = Command::new(xtask::pg::tools::find("psql").unwrap())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &admin])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "ALTER ROLE {role} PASSWORD '{pw}';").unwrap();
        assert!(child.wait().unwrap().success());
        seen.lock().unwrap().push(pw);
    });
    set
}

/// No production credentials configured: the throwaway gets a one-time master password
/// (ModifyDBInstance, apply-immediately) that reaches psql and pg_dump through their environment
/// only — it is in no argv, no output, no file, and no AWS request but that one; production's
/// secret is never read.
#[tokio::test]
async fn without_credentials_a_one_time_password_is_set_and_shows_nowhere() {
    let moto = Moto::start();
    let db = StandIn::create("onetime");
    production(&moto, &db).await;
    // Rotated since the snapshot (as far as the stand-in knows): only a new password works.
    psql(&db.admin_url(), &format!("ALTER ROLE {} PASSWORD 'rotated-since-the-snapshot'", db.role));
    let project = Project::configured("onetime", true, "");
    let set = set_master_passwords(&moto, &db);
    let sampler = Cmdlines::sample();
    let log = project.dir.join("forwarder.log");
    let tunnel = forwarder(&db, &log);
    let out = command(&moto, &project.dir, &["clone-prod", "--tunnel", "command", "--tunnel-command", &tunnel], &[])
        .output()
        .unwrap();
    let cmdlines = sampler.seen();
    let passwords = set.lock().unwrap().clone();
    assert_eq!(passwords.len(), 1, "one ModifyDBInstance with a password: {:?}", moto.proxy.actions());
    let pw = &passwords[0];
    assert!(pw.len() >= 32, "a long password");
    let run = finish(out, &[&db.password, pw]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("one-time master password"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("login        `{}` to `{}`", db.role, db.dbname)), "{}", run.stderr);
    // The password went to AWS once, in the Modify call of the throwaway, and nowhere else.
    let calls = moto.proxy.calls();
    for c in &calls {
        if c.body.contains(pw.as_str()) {
            assert_eq!(c.action, "ModifyDBInstance", "{}", c.body);
            assert!(c.body.contains("ApplyImmediately=true") && c.body.contains("-clone-"), "{}", c.body);
        }
    }
    let actions: Vec<String> = calls.iter().map(|c| c.action.clone()).collect();
    assert!(
        !actions.iter().any(|a| a == "GetParameter" || a == "GetSecretValue"),
        "production's secret was read: {actions:?}"
    );
    let (restore, modify, delete) = (
        actions.iter().position(|a| a == "RestoreDBInstanceFromDBSnapshot").unwrap(),
        actions.iter().position(|a| a == "ModifyDBInstance").unwrap(),
        actions.iter().position(|a| a == "DeleteDBInstance").unwrap(),
    );
    assert!(restore < modify && modify < delete, "{actions:?}");
    assert!(!cmdlines.contains(pw.as_str()), "the one-time password was in a command line");
    assert!(cmdlines.contains("pg_dump"), "the sampler saw pg_dump run");
    assert_eq!(files_containing(&project.dir, pw), Vec::<String>::new());
    assert_eq!(
        files_containing(&std::env::temp_dir().join(format!("xtask-aws-it-{}-{}", std::process::id(), moto.port)), pw),
        Vec::<String>::new()
    );
    assert_eq!(project.dumps().len(), 1, "{:?}", project.dumps());
    assert_eq!(tagged(&moto.rds()).await, Vec::<String>::new());
}

/// `--iam-auth`: the throwaway is restored with IAM authentication on, no password is set or read,
/// and the login is a token (the stand-in server knows no IAM, so it refuses the token: the run
/// says what the user needs, and the throwaway is deleted). The token is in no argv or output.
#[tokio::test]
async fn iam_auth_restores_with_iam_on_reads_no_secret_and_cleans_up() {
    let moto = Moto::start();
    let db = StandIn::create("iamauth");
    production(&moto, &db).await;
    let project = Project::configured("iamauth", true, "");
    let sampler = Cmdlines::sample();
    let log = project.dir.join("forwarder.log");
    let tunnel = forwarder(&db, &log);
    let args = ["clone-prod", "--iam-auth", "--db-user", "dumper", "--tunnel", "command", "--tunnel-command", &tunnel];
    let out = command(&moto, &project.dir, &args, &[]).output().unwrap();
    let cmdlines = sampler.seen();
    let run = finish(out, &[&db.password, "X-Amz-Signature", "Action=connect"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("login        `dumper` to"), "{}", run.stderr);
    assert!(run.stderr.contains("IAM authentication"), "{}", run.stderr);
    assert!(run.stderr.contains("password authentication failed") && run.stderr.contains("rds_iam"), "{}", run.stderr);
    let calls = moto.proxy.calls();
    let restore = calls.iter().find(|c| c.action == "RestoreDBInstanceFromDBSnapshot").unwrap();
    assert!(restore.body.contains("EnableIAMDatabaseAuthentication=true"), "{}", restore.body);
    let actions: Vec<&str> = calls.iter().map(|c| c.action.as_str()).collect();
    for never in ["GetParameter", "GetSecretValue"] {
        assert!(!actions.contains(&never), "{never}: {actions:?}");
    }
    assert!(!calls.iter().any(|c| c.body.contains("MasterUserPassword")), "a password was set: {actions:?}");
    assert!(!cmdlines.contains("X-Amz-Signature"), "an IAM token was in a command line");
    let connections: Vec<_> = log_records(&log).into_iter().filter(|r| r["connection"] == true).collect();
    assert!(!connections.is_empty() && connections.iter().all(|r| r["ssl_request"] == true), "TLS: {connections:?}");
    assert_eq!(tagged(&moto.rds()).await, Vec::<String>::new());
    assert!(project.dumps().is_empty());
}

/// `clone-prod --rehearse`: the branch's pending migration is rehearsed on the throwaway itself
/// (the stand-in, reached through the tunnel): traced, smoke-tested with the app pointed through
/// the tunnel (TLS), gated against a fresh build on the local server; the report is written; the
/// throwaway is deleted; and nothing is dumped — the bytes the tunnel carried back are a small
/// fraction of the table data, which a dump would have brought.
#[tokio::test]
async fn a_remote_rehearsal_reports_on_the_throwaway_and_dumps_nothing() {
    let moto = Moto::start();
    let db = StandIn::bare("remote");
    let project = Project::configured("remote", true, "");
    // Production was built by the app's migrator from 0001; the branch adds 0002.
    let migrations = project.dir.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(migrations.join("0001_schema.sql"), SCHEMA).unwrap();
    let migrate = Command::new(app_bin())
        .arg("migrate")
        .env("DATABASE_URL", db.owner_url())
        .env("APP_MIGRATIONS_DIR", &migrations)
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    db.as_owner(DATA);
    // Rows a dump would carry: about 16 MB.
    db.as_owner("CREATE TABLE public.blobs (id bigserial PRIMARY KEY, body text); INSERT INTO public.blobs (body) SELECT (SELECT string_agg(md5(g || '-' || i), '') FROM generate_series(1, 100) i) FROM generate_series(1, 5000) g;");
    std::fs::write(
        migrations.join("0001_schema.sql"),
        format!("{SCHEMA}CREATE TABLE public.blobs (id bigserial PRIMARY KEY, body text);\n"),
    )
    .unwrap();
    db.as_owner(&format!(
        "UPDATE _sqlx_migrations SET checksum = sha384(convert_to({}, 'UTF8'))",
        xtask::pg::literal(&std::fs::read_to_string(migrations.join("0001_schema.sql")).unwrap())
    ));
    std::fs::write(
        migrations.join("0002_notes.sql"),
        "ALTER TABLE crm.customer ADD COLUMN note text;\nCREATE INDEX orders_placed ON crm.orders (placed);\n",
    )
    .unwrap();
    production(&moto, &db).await;
    let set = set_master_passwords(&moto, &db);
    let app = app_bin().display().to_string();
    let toml = std::fs::read_to_string(project.dir.join("Cargo.toml")).unwrap();
    let (head, aws) = toml.split_once("[workspace.metadata.db.aws]").unwrap();
    std::fs::write(
        project.dir.join("Cargo.toml"),
        format!(
            "{head}migrate_command = [\"env\", \"APP_MIGRATIONS_DIR=migrations\", \"{app}\", \"migrate\"]\n\n\
             [workspace.metadata.db.rehearse]\nserve_command = [\"{app}\", \"serve\"]\n\n[workspace.metadata.db.aws]{aws}"
        ),
    )
    .unwrap();
    let log = project.dir.join("forwarder.log");
    let tunnel = forwarder(&db, &log);
    let report = project.dir.join("dump/rehearse/remote.md");
    let args = [
        "clone-prod",
        "--rehearse",
        "--report",
        report.to_str().unwrap(),
        "--tunnel",
        "command",
        "--tunnel-command",
        &tunnel,
    ];
    let local = test_url();
    let out = command(&moto, &project.dir, &args, &[("DATABASE_URL", local)]).output().unwrap();
    let run = finish(out, &[&db.password]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("rehearse     this branch's pending migrations on the throwaway itself"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("smoke test before migrating: passed"), "{}", run.stderr);
    assert!(run.stderr.contains("smoke test after migrating: passed"), "{}", run.stderr);
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains(&format!("a copy of `{SOURCE}`")), "{md}");
    assert!(md.contains("0002_notes.sql") && md.contains("1 of 1 pending migration(s) applied"), "{md}");
    assert!(md.contains("✅ gate"), "{md}");
    // The migration ran there: the throwaway (the stand-in) has the column and the ledger row.
    assert_eq!(
        psql(&db.admin_url(), "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'"),
        "1"
    );
    assert_eq!(psql(&db.admin_url(), "SELECT max(version) FROM _sqlx_migrations"), "2");
    // No dump (the report and the gate's canonical schemas only), no instance left.
    assert!(!project.dumps().iter().any(|d| d.starts_with("prod-") || d.contains("partial")), "{:?}", project.dumps());
    assert_eq!(tagged(&moto.rds()).await, Vec::<String>::new());
    // What came back through the tunnel: every connection TLS, and far less than the data.
    let records = log_records(&log);
    assert!(records.iter().filter(|r| r["connection"] == true).all(|r| r["ssl_request"] == true), "{records:?}");
    let back: u64 = records.iter().filter_map(|r| r["to_client"].as_u64()).sum();
    let data: u64 = psql(
        &db.admin_url(),
        "SELECT sum(pg_total_relation_size(oid)) FROM pg_class WHERE relname IN ('blobs', 'customer', 'orders', 'events')",
    )
    .parse()
    .unwrap();
    assert!(data > 8 << 20, "{data}");
    assert!(back < data / 8, "{back} bytes came back through the tunnel, for {data} bytes of table data");
}
