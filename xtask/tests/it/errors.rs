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
