//! The dump: where it may go, reaching the database through the tunnel, masking there, and
//! `pg_dump` through the tunnel by the xtask's `pg::dump` (a temporary name renamed when
//! complete, private, with progress).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xtask::error::{fail, telling_line};
use xtask::pg::dump::{Ended, Format, Writing};
use xtask::pg::url::encode;
use xtask::pg::{client, PgUrl};
use xtask::proc;

use crate::credentials::Credentials;
use crate::wait::pause;

/// Where and as whom to connect (through the tunnel).
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub credentials: Credentials,
}

impl Target {
    /// The instance's URL through the tunnel, TLS required.
    pub fn url(&self) -> Result<PgUrl> {
        let c = &self.credentials;
        PgUrl::parse(&format!(
            "postgres://{}:{}@{}:{}/{}?sslmode=require&connect_timeout=20&application_name=xtask-db%20clone-prod",
            encode(&c.username),
            encode(&c.password.get()),
            self.host,
            self.port,
            encode(&c.dbname)
        ))
        .context("the instance's connection details do not make a URL")
    }

    /// `program args… -d <URL without the password>`, built by [`client::command`] (the password
    /// in the environment, never in argv). Nothing of the user's own `PG*` environment reaches
    /// it: it talks to the throwaway instance and nothing else.
    fn command(&self, program: &Path, args: &[&str]) -> Result<Command> {
        let mut cmd = client::command(program, args, &self.url()?, &[])?;
        let set: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_os_string()).collect();
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") && !set.contains(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }
}

/// The fix for what `psql`/`pg_dump` said.
fn advice(stderr: &str, target: &Target) -> String {
    if stderr.contains("password authentication failed") {
        let user = &target.credentials.username;
        format!(
            "with stored credentials the throwaway has the passwords of the snapshot's time (rotated since? run again with --fresh-snapshot, or without --credentials-… for a one-time password); with --iam-auth, `{user}` needs the rds_iam role on production; with a one-time password, run again"
        )
    } else if stderr.contains("does not exist") && stderr.contains("database") {
        "name the right database: `dbname` in the credentials, or --dbname".into()
    } else if stderr.contains("SSL") {
        "the server must accept TLS connections (sslmode=require)".into()
    } else if stderr.contains("server version") {
        "install a pg_dump at least as new as the server (or set XTASK_PG_BINDIR)".into()
    } else if stderr.contains("permission denied") {
        "the database user cannot read everything: use credentials of the instance's master user".into()
    } else {
        "check that the tunnel reaches the instance (the bastion must be allowed into the instance's security group on its port)".into()
    }
}

/// Connects through the tunnel and checks the server's major version; retried for a while, since
/// a fresh tunnel may drop the first connections.
/// `new_password`: the password was just set (a one-time password), and an authentication
/// failure is retried too, within the same minute — it may reach the server a little after AWS
/// reports it applied.
pub async fn probe(psql: &Path, target: &Target, pg_dump_major: u32, new_password: bool) -> Result<u32> {
    let start = Instant::now();
    loop {
        let mut cmd =
            target.command(psql, &["-X", "-A", "-t", "-w", "-c", "SELECT current_setting('server_version_num')"])?;
        let (status, out, err) = tokio::task::spawn_blocking(move || proc::output(&mut cmd, None)).await??;
        proc::check_interrupt()?;
        let stderr = String::from_utf8_lossy(&err).trim().to_string();
        if status.success() {
            let num: u32 = String::from_utf8_lossy(&out).trim().parse().unwrap_or(0);
            let major = num / 10000;
            if major > pg_dump_major {
                return Err(fail(
                    format!("the instance runs PostgreSQL {major}, newer than pg_dump {pg_dump_major}"),
                    format!("install the PostgreSQL {major} client programs (or set XTASK_PG_BINDIR)"),
                ));
            }
            return Ok(major);
        }
        let retryable = !stderr.contains("does not exist") && (new_password || !stderr.contains("authentication"));
        if !retryable || start.elapsed() > Duration::from_secs(60) {
            return Err(fail(
                format!("cannot connect to the throwaway instance through the tunnel: {}", last_line(&stderr)),
                advice(&stderr, target),
            ));
        }
        eprintln!("  not reachable yet ({}); retrying", last_line(&stderr));
        pause(Duration::from_secs(3)).await?;
    }
}

/// What went wrong, in the program's words.
fn last_line(s: &str) -> &str {
    Some(telling_line(s)).filter(|l| !l.is_empty()).unwrap_or("no message")
}

/// Masking on the throwaway instance: the rules, the key, where it came from, the ledger (never
/// classified).
pub struct Masking {
    pub rules: std::collections::BTreeMap<String, xtask::mask::Rule>,
    pub key: Vec<u8>,
    pub key_env: String,
    pub ledger: String,
    /// The repository's migrations (their comments are not production data).
    pub known: String,
}

/// Masks the throwaway's database with the shared pipeline ([`xtask::mask::apply`]: every
/// column classified first — strict: anything unreviewed stops the run before a row is touched
/// or dumped —, one transaction, triggers off), through psql over the tunnel.
pub async fn mask(psql: &Path, target: &Target, m: &Masking) -> Result<()> {
    let (psql, target, rules, key, ledger, known) =
        (psql.to_path_buf(), target.clone(), m.rules.clone(), m.key.clone(), m.ledger.clone(), m.known.clone());
    tokio::task::spawn_blocking(move || {
        let db = |input: &str| -> Result<String> {
            let mut cmd = target.command(&psql, &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])?;
            proc::capture(&mut cmd, Some(input.as_bytes()))
        };
        let how = xtask::mask::Apply {
            place: "on the throwaway instance, before anything leaves AWS",
            known: &known,
            nothing: "nothing was masked or dumped",
            escape: " (or pass --unmasked, to take production as it is)",
            compact: false,
        };
        xtask::mask::apply(&db, &rules, &ledger, &key, &how)
    })
    .await??;
    proc::check_interrupt()
}

/// `pg_dump` of the throwaway's database into `dest` in `format` (a `-Fc` file, or a `-Fd -j N`
/// directory: N+1 connections through the tunnel), by the xtask's [`xtask::pg::dump::Writing`]:
/// written under `.<name>.partial`, private, renamed when pg_dump succeeded. Whatever ends it
/// early (an error, a signal, the future being dropped) removes the partial dump.
pub async fn dump(pg_dump: &Path, target: &Target, format: Format, dest: &Path) -> Result<u64> {
    let mut cmd = target.command(pg_dump, &["--no-password"])?;
    let mut writing = Writing::start(&mut cmd, format, dest, true)?;
    let ended = loop {
        if let Some(ended) = writing.poll()? {
            break ended;
        }
        // Not `pause`: on a signal pg_dump is interrupted by the signal thread and exits.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match ended {
        Ended::Complete(size) => Ok(size),
        Ended::Failed { status, stderr } => Err(fail(
            format!("pg_dump failed ({}): {}", proc::describe(status), last_line(&stderr)),
            advice(&stderr, target),
        )),
    }
}
