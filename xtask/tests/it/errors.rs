//! Bad environments get one clear line, naming the cause and the fix, a non-zero exit, and
//! leave nothing behind.

use crate::support::{free_port, url_for, Project};

const SECRET: &str = "s3cr3t-pw-never-shown";

#[test]
fn unreachable_server() {
    let p = Project::new("unreach");
    let url = format!("postgres://postgres:{SECRET}@127.0.0.1:{}/x", free_port());
    let run = p.xtask_in(&p.dir, &["db", "template", "create"], &[("DATABASE_URL", &url)]);
    let run = run.fails(2, "cargo xtask db up");
    assert!(run.stderr.contains("127.0.0.1"), "{}", run.stderr);
    assert!(!run.all().contains(SECRET));
    assert_eq!(run.stderr.lines().filter(|l| l.starts_with("error")).count(), 1);
}

#[test]
fn database_url_without_database_name() {
    let p = Project::new("nodb");
    let url = url_for("x");
    let url = url.rsplit_once('/').unwrap().0.to_string() + "/";
    let run = p.xtask_in(&p.dir, &["db", "template", "create"], &[("DATABASE_URL", &url)]);
    run.fails(2, "has no database name");
    assert!(p.databases().is_empty());
}

#[test]
fn garbage_database_url() {
    let p = Project::new("garbage");
    for url in [
        format!("mysql://root:{SECRET}@localhost/db"),
        format!("postgres://u:{SECRET}@host:notaport/db"),
        "definitely not a url".to_string(),
    ] {
        let run = p.xtask_in(&p.dir, &["db", "migrate"], &[("DATABASE_URL", &url)]);
        let run = run.fails(2, "not a valid PostgreSQL URL");
        assert!(!run.all().contains(SECRET), "{}", run.all());
    }
}

#[test]
fn malformed_env_file() {
    let p = Project::new("badenv");
    std::fs::write(p.dir.join(".env"), "# ok\nDATABASE_URL=\"postgres://x/y\nPORT=1\n").unwrap();
    p.xtask(&["db", "status"]).fails(2, ".env line 2");
}

#[test]
fn missing_pg_dump() {
    let p = Project::new("nodump");
    // A bin directory with psql but no pg_dump.
    let bindir = p.dir.join("pgbin");
    std::fs::create_dir_all(&bindir).unwrap();
    let psql = which("psql");
    std::os::unix::fs::symlink(psql, bindir.join("psql")).unwrap();
    let run = p.xtask_in(&p.dir, &["db", "template", "create"], &[("XTASK_PG_BINDIR", bindir.to_str().unwrap())]);
    run.fails(2, "`pg_dump` not found");
    assert!(p.databases().is_empty());
}

fn which(program: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.exists())
        .or_else(|| Some(std::path::PathBuf::from(format!("/usr/lib/postgresql/15/bin/{program}"))))
        .unwrap()
}

/// `cargo xtask … 2>&1 | head`: once the reader leaves, stderr is a broken pipe too. The next
/// line of talk must end the process as a filter ends (141), not with a panic (101) — the
/// unreproducible exit 101 of a `db rehearse`.
#[test]
fn a_closed_stderr_ends_quietly_not_with_a_panic() {
    let p = Project::new("closederr");
    std::fs::write(p.dir.join("a.sql"), "CREATE TABLE a (x int);\n").unwrap();
    std::fs::write(p.dir.join("b.sql"), "CREATE TABLE a (x int);\n").unwrap();
    let mut child = p
        .command(&p.dir, &["db", "schema-diff", "a.sql", "b.sql"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "{status:?}");
}

/// `clone-prod` with nothing configured, as a new user first runs it: every problem in one run,
/// within a second, before the AWS tool is built (cargo is never started) or AWS is asked.
#[test]
fn clone_prod_with_nothing_configured_lists_every_problem_at_once_without_building() {
    let p = Project::new("cpcheck");
    // Masking rules but no key; the dump directory not ignored; no AWS settings at all.
    let toml = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    std::fs::write(
        p.dir.join("Cargo.toml"),
        format!("{toml}\n[workspace.metadata.db.mask.rules]\n\"crm.customers.email\" = \"email\"\n"),
    )
    .unwrap();
    std::fs::write(p.dir.join(".gitignore"), ".env\n").unwrap();
    let marker = p.dir.join("cargo-was-run");
    let fake_cargo = p.dir.join("fake-cargo");
    std::fs::write(&fake_cargo, format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display())).unwrap();
    std::fs::set_permissions(&fake_cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let home = p.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // Nothing of this machine's AWS setup: HOME is empty, no AWS variable is set.
    let bare = |args: &[&str]| {
        let mut cmd = p.command(&p.dir, args, &[]);
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("AWS_") || var == "XTASK_MASK_KEY" {
                cmd.env_remove(var);
            }
        }
        cmd.env("HOME", &home).env("CARGO", &fake_cargo).env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    };
    let mut cmd = bare(&["db", "clone-prod", "--dry-run"]);
    cmd.env("XTASK_PG_BINDIR", p.dir.join("no-bin")).env("PATH", "/usr/bin:/bin");
    let start = std::time::Instant::now();
    let run = crate::support::Run::from(cmd.output().unwrap());
    let took = start.elapsed();
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(!marker.exists(), "cargo was started before the checks:\n{}", run.all());
    for problem in [
        "8 problems",
        "no AWS region is configured",
        "no source instance is configured",
        "the ssm tunnel needs a bastion",
        "`session-manager-plugin` is not on PATH",
        "is not git-ignored",
        "`pg_dump` not found",
        "`psql` not found",
        "no masking key: `XTASK_MASK_KEY` is not set",
    ] {
        assert!(run.stderr.contains(problem), "missing {problem:?}:\n{}", run.stderr);
    }
    // Each problem on its own line, with its fix.
    assert!(run.stderr.lines().filter(|l| l.starts_with("  - ") && l.contains(" — ")).count() >= 7, "{}", run.stderr);
    assert!(took < std::time::Duration::from_secs(1), "the checks took {took:?}");

    // A named profile that exists nowhere is found too, and a region from the profile counts.
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(home.join(".aws/config"), "[profile prod]\nregion = eu-west-1\n").unwrap();
    let run =
        crate::support::Run::from(bare(&["db", "clone-prod", "--dry-run", "--profile", "prdo"]).output().unwrap());
    assert!(run.stderr.contains("the AWS profile `prdo` is in neither"), "{}", run.stderr);
    let run =
        crate::support::Run::from(bare(&["db", "clone-prod", "--dry-run", "--profile", "prod"]).output().unwrap());
    assert!(!run.stderr.contains("profile") && !run.stderr.contains("region"), "{}", run.stderr);
    // The default profile as `[profile default]`, its region in the credentials file (the SDK
    // merges both files).
    std::fs::write(home.join(".aws/config"), "[profile default]\noutput = json\n").unwrap();
    std::fs::write(home.join(".aws/credentials"), "[default]\nregion = eu-west-1\n").unwrap();
    let run = crate::support::Run::from(bare(&["db", "clone-prod", "--dry-run"]).output().unwrap());
    assert!(!run.stderr.contains("profile") && !run.stderr.contains("region"), "{}", run.stderr);
    assert!(!marker.exists());
}
