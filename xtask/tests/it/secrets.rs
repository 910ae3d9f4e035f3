//! Secret URL parameters (`password`, `sslpassword`) reach programs through their environment
//! only: never argv, output, errors, `status --json`, or a file the tool writes that did not
//! already hold them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{password, url_for, Project, Run};
use crate::worktree::{env_db, project, worktree};

const SSL_SECRET: &str = "sekrit-ssl-pw";

/// A bin directory whose `psql` and `pg_dump` each log their argv, and the service file they
/// were given with its and its directory's modes, into a file of their own in `logs`, then run
/// the real program.
fn logging_bindir(p: &Project) -> (PathBuf, PathBuf) {
    let (bindir, logs) = (p.dir.join("pgbin"), p.dir.join("pglogs"));
    std::fs::create_dir_all(&bindir).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    for program in ["psql", "pg_dump"] {
        let real = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
        let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
        let script = format!(
            "#!/bin/sh\nlog={logs}/{program}.$$\n{{\n  printf 'argv'; for a in \"$0\" \"$@\"; do printf ' [%s]' \"$a\"; done; echo\n  \
             if [ -n \"$PGSERVICEFILE\" ]; then\n    echo \"service $PGSERVICE $(stat -c %a \"$PGSERVICEFILE\") $(stat -c %a \"$(dirname \"$PGSERVICEFILE\")\")\"\n    \
             echo \"file $(tr '\\n' ' ' < \"$PGSERVICEFILE\")\"\n  fi\n}} > \"$log\"\nexec {real} \"$@\"\n",
            logs = logs.display()
        );
        let path = bindir.join(program);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    (bindir, logs)
}

/// Runs the xtask and returns what it printed, and whether its service directory is gone.
fn run_watched(p: &Project, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (Run, bool) {
    let child = p.command(cwd, args, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let dir = std::env::temp_dir().join(format!("xtask-pgservice-{}", child.id()));
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, !dir.exists())
}

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SSL_SECRET), "sslpassword in {what}:\n{text}");
    assert!(!text.contains(&password()), "password in {what}:\n{text}");
}

#[test]
fn sslpassword_reaches_programs_through_a_service_file_only() {
    let p = project("secret");
    let wt = worktree(&p, "secret");
    let (bindir, logs) = logging_bindir(&p);
    let env_url = format!("{}?sslpassword={SSL_SECRET}&application_name=it", url_for(&p.template()));
    let env = [("DATABASE_URL", env_url.as_str()), ("XTASK_PG_BINDIR", bindir.to_str().unwrap())];

    // The dump strategy: pg_dump | psql as well as the admin session.
    let (run, removed) = run_watched(&p, &wt, &["db", "worktree", "--strategy", "dump"], &env);
    let run = run.ok();
    assert_no_secret("the output of db worktree", &run.all());
    assert!(removed, "the service directory outlived the run");
    let db = env_db(&wt).split('?').next().unwrap().to_string();
    assert!(db.starts_with(&format!("{}secret", p.prefix)), "{db}");

    // The secrets came from the environment, not from a file: .env gets the URL without them.
    let written = std::fs::read_to_string(wt.join(".env")).unwrap();
    assert_no_secret(".env", &written);
    assert!(written.contains(&format!("/{db}?application_name=it")), "{written}");
    assert!(run.stderr.contains("without its password and sslpassword"), "{}", run.stderr);

    // Every program run: secret-free argv; the libpq ones got the private service file.
    let mut with_service = 0;
    for entry in std::fs::read_dir(&logs).unwrap() {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let argv = log.lines().next().unwrap();
        assert_no_secret("argv", argv);
        if log.contains(&format!("service xtask 600 700\nfile [xtask] sslpassword={SSL_SECRET} ")) {
            with_service += 1;
        }
    }
    assert!(with_service >= 3, "psql and pg_dump with the service file: {with_service}");

    // status --json: the URL masked.
    let (status, removed) = run_watched(&p, &wt, &["db", "status", "--json"], &env);
    let status = status.ok();
    assert_no_secret("status --json", &status.all());
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let shown = json["server"]["url"].as_str().unwrap();
    assert!(shown.contains(":***@") && shown.contains("sslpassword=***"), "{shown}");
    assert!(removed);

    // Errors: a server that does not answer, and a URL with a service of its own.
    let dead = format!(
        "postgres://postgres:{}@127.0.0.1:{}/x?sslpassword={SSL_SECRET}",
        password(),
        crate::support::free_port()
    );
    let (status, _) = run_watched(&p, &wt, &["db", "status", "--json"], &[("DATABASE_URL", &dead)]);
    assert_no_secret("status of a dead server", &status.all());
    let (migrate, _) = run_watched(&p, &wt, &["db", "migrate"], &[("DATABASE_URL", &dead)]);
    assert_no_secret("the error", &migrate.fails(2, "127.0.0.1").all());
    let with_service = format!("{env_url}&service=mine");
    let (run, _) = run_watched(&p, &wt, &["db", "worktree"], &[("DATABASE_URL", &with_service)]);
    assert_no_secret("the error", &run.fails(2, "both `service` and `sslpassword`").all());
}

#[test]
fn the_service_file_is_removed_when_interrupted_and_after_sigkill_by_the_next_run() {
    let p = project("secretsig");
    // Big enough that the dump takes a moment.
    crate::support::sql(
        &p.template(),
        "CREATE TABLE public.bulk AS SELECT g AS id, md5(g::text) AS t FROM generate_series(1, 600000) g",
    );
    let env_url = format!("{}?sslpassword={SSL_SECRET}", url_for(&p.template()));
    let env = [("DATABASE_URL", env_url.as_str())];
    let before = p.databases();
    for signal in [libc::SIGINT, libc::SIGKILL] {
        let wt = worktree(&p, &format!("sig{signal}"));
        let mut child =
            p.command(&wt, &["db", "worktree", "--strategy", "dump"], &env).stderr(Stdio::null()).spawn().unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-pgservice-{}", child.id()));
        wait_for_databases(&p, before.len() + 1);
        assert!(dir.join("service-0.conf").exists(), "the service file is there while the clone runs");
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        if signal == libc::SIGKILL {
            assert!(dir.exists(), "nothing runs after SIGKILL");
            // The next run that needs a service file removes it.
            let (status, _) = run_watched(&p, &p.dir, &["db", "status"], &env);
            status.ok();
        } else {
            assert_eq!(status.code(), Some(128 + signal));
        }
        assert!(!dir.exists(), "after signal {signal}");
    }
}

fn wait_for_databases(p: &Project, n: usize) {
    let start = std::time::Instant::now();
    while p.databases().len() < n {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "timed out waiting for the clone to start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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

#[test]
fn db_url_and_db_psql_keep_the_password_out_of_argv_and_output() {
    let p = project("reach");
    let wt = worktree(&p, "reach");
    crate::worktree::run_in(&p, &wt, &["--skip-generate"]).ok();
    let db = env_db(&wt);
    // `db url`: redacted unless asked.
    let shown = p.xtask_in(&wt, &["db", "url"], &[]).ok();
    assert_no_secret("db url", &shown.all());
    assert!(shown.stdout.trim().ends_with(&format!("/{db}")), "{}", shown.stdout);
    let full = p.xtask_in(&wt, &["db", "url", "--show-password"], &[]).ok();
    assert!(full.stdout.contains(&password()), "{}", full.stdout);
    // `db psql`: its arguments pass through; while it runs, no command line holds the password.
    let child = p
        .command(&wt, &["db", "psql", "--", "-X", "-A", "-t", "-c", "SELECT current_database(), pg_sleep(2)"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    for _ in 0..15 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen.push_str(&all_cmdlines());
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{db}|")), "{out:?}");
    assert!(seen.contains("pg_sleep(2)"), "psql was never seen running");
    assert!(!seen.contains(&password()), "the password is in a command line");
    // psql's exit code is ours.
    let bad = p.xtask_in(&wt, &["db", "psql", "--", "-X", "-v", "ON_ERROR_STOP=1", "-c", "SELECT 1/0"], &[]);
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(bad.stderr.contains("division by zero"), "psql says why: {}", bad.stderr);
    assert!(!bad.stderr.contains("error: exited"), "nothing added to psql's own words: {}", bad.stderr);
    assert_no_secret("db psql", &bad.all());
}
