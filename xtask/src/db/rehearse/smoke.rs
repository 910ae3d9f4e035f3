//! The smoke test of `db rehearse`: `rehearse.smoke_command` (exit 0 passes), or by default the
//! app's server (`rehearse.serve_command`) started on a free port against the copy, passing when
//! `GET health_path` answers 200. Either runs with `DATABASE_URL` and `PORT` in its environment.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::pg::Server;
use crate::proc::{self, Registered};

#[derive(Debug, Clone, Serialize)]
pub struct Smoke {
    /// `before migrating` or `after migrating`.
    pub when: String,
    pub passed: bool,
    /// What was run, and what it answered or why it failed.
    pub detail: String,
    pub duration_ms: u64,
}

pub fn run(ctx: &Ctx, server: &Server, db: &str, when: &str) -> Result<Smoke> {
    let started = Instant::now();
    let rc = &ctx.config.rehearse;
    let port = crate::pg::cluster::free_port()?;
    let custom = !rc.smoke_command.is_empty();
    let argv = if custom { &rc.smoke_command } else { &rc.serve_command };
    if argv.is_empty() {
        anyhow::bail!("`rehearse.serve_command` is empty: set it, or `rehearse.smoke_command`")
    }
    let mut cmd = ctx.configured(argv, &server.url.with_dbname(db), Some(port))?;
    cmd.stdin(Stdio::null());
    // Its own process group: whatever it starts (a psql, a sleep) is stopped with it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // Its output (a build's progress, the server's log) goes to our stderr; stdout is for data.
    let to_stderr = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned()?;
    cmd.stdout(Stdio::from(to_stderr));
    let shown = proc::display(&cmd);
    crate::term::announce(format_args!(
        "smoke test {when}: {}",
        if custom { shown.clone() } else { format!("{shown}, then GET {} on port {port}", rc.health_path) }
    ));
    let mut child = Registered::spawn(&mut cmd)?;
    let timeout = Duration::from_secs(rc.smoke_timeout_secs);
    let result =
        if custom { wait_exit(&mut child, timeout) } else { wait_health(&mut child, port, &rc.health_path, timeout) };
    stop(&mut child);
    proc::check_interrupt()?;
    let (passed, detail) = match result {
        Ok(detail) => (true, detail),
        Err(why) => (false, why),
    };
    eprintln!("  smoke test {when}: {} ({detail})", if passed { "passed" } else { "FAILED" });
    Ok(Smoke { when: when.to_string(), passed, detail, duration_ms: started.elapsed().as_millis() as u64 })
}

fn wait_exit(child: &mut Registered, timeout: Duration) -> std::result::Result<String, String> {
    let start = Instant::now();
    loop {
        match child.child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok("exit 0".into()),
            Ok(Some(status)) => return Err(format!("it failed ({})", proc::describe(status))),
            Ok(None) if start.elapsed() > timeout => {
                return Err(format!("no result within {} s (rehearse.smoke_timeout_secs)", timeout.as_secs()))
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
        if proc::interrupted().is_some() {
            return Err("interrupted".into());
        }
    }
}

/// Polls `GET path` until the server answers (the first answer is the verdict: 200 passes), the
/// server exits, or the time is up.
fn wait_health(
    child: &mut Registered,
    port: u16,
    path: &str,
    timeout: Duration,
) -> std::result::Result<String, String> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.child.try_wait() {
            return Err(format!("the server exited before answering ({})", proc::describe(status)));
        }
        if proc::interrupted().is_some() {
            return Err("interrupted".into());
        }
        if let Some((code, body)) = get(port, path) {
            let body: String = body.trim().chars().take(300).collect();
            return if code == 200 {
                Ok(format!("200 {body}"))
            } else {
                Err(format!("GET {path} answered {code} {body}"))
            };
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "GET {path} got no answer within {} s (rehearse.smoke_timeout_secs)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET path` on 127.0.0.1:port: the status code and body, or `None` when nothing answers yet.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// SIGTERM to its process group (a server shuts down gracefully), SIGKILL to what is left of
/// the group after 10 s — or at once, for what a finished command left running.
fn stop(child: &mut Registered) {
    let group = -(child.child.id() as libc::pid_t);
    if matches!(child.child.try_wait(), Ok(None)) {
        // SAFETY: kill(2) on the process group our own child leads.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) && matches!(child.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // SAFETY: as above; the group may be gone already (ESRCH is fine).
    unsafe { libc::kill(group, libc::SIGKILL) };
}
