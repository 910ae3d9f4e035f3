//! `cargo xtask test`: the project's one test command.
//!
//! Starts a throwaway PostgreSQL cluster (a real server, on a free loopback port, as the
//! unprivileged server user when we are root), builds the app, runs `cargo test --workspace`
//! with `XTASK_TEST_DATABASE_URL` and `XTASK_TEST_APP_BIN` set, and removes the cluster after,
//! whatever happened. Integration tests create uniquely named databases on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::config::find_workspace_root;
use crate::flags::Test;
use crate::pg::cluster::{Cluster, InitOptions, State};
use crate::pg::{tools, Server};
use crate::proc;

pub const DATABASE_URL_ENV: &str = "XTASK_TEST_DATABASE_URL";
pub const APP_BIN_ENV: &str = "XTASK_TEST_APP_BIN";

pub fn run(flags: Test) -> Result<()> {
    let root = find_workspace_root(&std::env::current_dir()?)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    // Fail before building anything when the machine lacks PostgreSQL.
    tools::server_bindir()?;
    tools::find("psql")?;
    tools::find("pg_dump")?;

    eprintln!("▸ building the app (the tests run its migrator and server)");
    let mut build = Command::new(&cargo);
    build.current_dir(&root).args(["build", "--package", "app", "--bins"]);
    proc::show(&mut build)?;
    let app_bin = target_dir(&cargo, &root)?.join("debug").join("app");

    let parent = flags.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = parent.join(format!("xtask-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(&dir, 0o755)?;
    let server = TestServer { cluster: Cluster::new(dir.clone(), "postgres"), keep: flags.keep };
    server.cluster.init(&InitOptions {
        port: None,
        // A throwaway cluster: durability buys nothing here.
        extra_conf: &["fsync = off", "synchronous_commit = off", "full_page_writes = off", "max_connections = 300"],
    })?;
    server.cluster.start()?;
    let url = server.cluster.url("postgres")?;
    let pg = Server::connect(url.clone(), "postgres")?;
    eprintln!(
        "▸ test server: PostgreSQL {} on {} (throwaway cluster in {})",
        pg.version,
        url.server_label(),
        dir.display()
    );

    let mut test = Command::new(&cargo);
    test.current_dir(&root)
        .args(["test", "--workspace"])
        .args(&flags.cargo_test_args)
        .env(DATABASE_URL_ENV, url.expose_secret())
        .env(APP_BIN_ENV, &app_bin)
        .env_remove("DATABASE_URL")
        .env_remove("WORKTREE_TEMPLATE_DB");
    let result = proc::show(&mut test).context("the tests failed");
    drop(server);
    result
}

/// Stops and removes the throwaway cluster on every exit path.
struct TestServer {
    cluster: Cluster,
    keep: bool,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if matches!(self.cluster.state(), Ok(State::Running { .. })) {
            if let Err(e) = self.cluster.stop() {
                eprintln!("warning: stopping the test server: {e:#}");
            }
        }
        if self.keep {
            eprintln!("test server directory kept: {}", self.cluster.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.cluster.root);
        }
    }
}

fn target_dir(cargo: &std::ffi::OsStr, root: &Path) -> Result<PathBuf> {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args(["metadata", "--format-version", "1", "--no-deps"]);
    let out = proc::capture(&mut cmd, None)?;
    let meta: serde_json::Value = serde_json::from_str(&out).context("reading `cargo metadata`")?;
    Ok(PathBuf::from(meta["target_directory"].as_str().context("cargo metadata has no target_directory")?))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
