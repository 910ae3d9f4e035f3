//! `db status`: the server, the golden template and the per-branch databases.

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::error::report;
use crate::flags::Status;
use crate::migrations;
use crate::pg::cluster::State;
use crate::pg::{human_size, Server};

#[derive(Serialize)]
struct Report {
    server: ServerReport,
    embedded: Option<Embedded>,
    template: Option<TemplateReport>,
    /// `None`: unknown (the server did not answer).
    databases: Option<Vec<Database>>,
}

#[derive(Serialize)]
struct ServerReport {
    /// Redacted.
    url: Option<String>,
    source: Option<String>,
    up: bool,
    version: Option<String>,
    error: Option<String>,
}

#[derive(Serialize)]
struct Embedded {
    dir: String,
    state: &'static str,
    pid: Option<u32>,
    port: Option<u16>,
}

#[derive(Serialize)]
struct TemplateReport {
    name: String,
    exists: bool,
    size_bytes: Option<i64>,
    connections: Option<i64>,
    repo_migrations: usize,
    repo_latest: Option<i64>,
    migrations: Option<migrations::Comparison>,
}

#[derive(Serialize)]
struct Database {
    name: String,
    kind: String,
    size_bytes: i64,
    connections: i64,
    /// For a branch database: its branch, worktree, that worktree's `PORT`, and whether the
    /// worktree still exists (as `db worktrees` judges it).
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<BranchInfo>,
}

#[derive(Serialize)]
struct BranchInfo {
    branch: String,
    worktree: String,
    port: Option<u16>,
    worktree_exists: bool,
}

pub fn run(ctx: &Ctx, flags: Status) -> Result<()> {
    let cluster = ctx.cluster();
    let embedded = match cluster.state()? {
        State::Absent => None,
        state => Some(Embedded {
            dir: cluster.root.display().to_string(),
            state: if matches!(state, State::Running { .. }) { "running" } else { "stopped" },
            pid: match state {
                State::Running { pid } => Some(pid),
                _ => None,
            },
            port: cluster.info().ok().map(|i| i.port),
        }),
    };

    let mut server_report = ServerReport { url: None, source: None, up: false, version: None, error: None };
    let mut template = None;
    let mut databases = None;
    // A malformed .env or URL is an error; a server that does not answer is a status.
    let connected = match ctx.configured_url()? {
        None => Err(ctx.database_url().unwrap_err()),
        Some(_) => {
            let (url, source) = ctx.database_url()?;
            server_report.url = Some(url.redacted());
            server_report.source = Some(source.to_string());
            Server::connect(url, &ctx.config.maintenance_db)
        }
    };
    match connected {
        Err(e) => server_report.error = Some(report(&e).line.trim_start_matches("error: ").to_string()),
        Ok(server) => {
            server_report.up = true;
            server_report.version = Some(server.version.clone());
            let repo = migrations::in_repo(&ctx.config.migrations_path())?;
            let name = ctx.config.template.clone();
            let info = server.database(&name)?;
            let comparison = match &info {
                Some(i) if i.allow_connections => {
                    Some(migrations::compare(&repo, &migrations::ledger(&server, &name, &ctx.config.ledger_table)?))
                }
                _ => None,
            };
            template = Some(TemplateReport {
                exists: info.is_some(),
                size_bytes: info.as_ref().map(|i| i.size_bytes),
                connections: info.as_ref().map(|i| i.connections),
                repo_migrations: repo.len(),
                repo_latest: repo.last().map(|m| m.version),
                migrations: comparison,
                name,
            });
            let live = super::ops::owner::Live::of(ctx)?;
            let mut found = Vec::new();
            for d in server.databases(&ctx.config.prefix, &[])? {
                if d.name == ctx.config.template {
                    continue;
                }
                let Some(kind) = d.kind() else { continue };
                let branch = d.branch().map(|b| {
                    let port = crate::env_file::EnvFile::load(&b.worktree.join(".env"))
                        .ok()
                        .and_then(|e| e.get("PORT").ok().flatten().and_then(|p| p.trim().parse().ok()));
                    BranchInfo {
                        branch: b.branch.clone(),
                        worktree: b.worktree.display().to_string(),
                        port,
                        worktree_exists: live.owns(&d),
                    }
                });
                found.push(Database {
                    kind: kind.name().to_string(),
                    name: d.name.clone(),
                    size_bytes: d.size_bytes,
                    connections: d.connections,
                    branch,
                });
            }
            databases = Some(found);
        }
    }
    let report = Report { server: server_report, embedded, template, databases };
    if flags.format.json(flags.json) {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn print_text(r: &Report) {
    let s = &r.server;
    match (&s.url, s.up) {
        (Some(url), true) => {
            println!("server    PostgreSQL {} — up", s.version.as_deref().unwrap_or("?"));
            println!("          {url} (DATABASE_URL from {})", s.source.as_deref().unwrap_or("?"));
        }
        (Some(url), false) => {
            println!("server    down: {url} (DATABASE_URL from {})", s.source.as_deref().unwrap_or("?"));
            println!("          {}", s.error.as_deref().unwrap_or(""));
        }
        (None, _) => println!("server    not configured: {}", s.error.as_deref().unwrap_or("")),
    }
    match &r.embedded {
        Some(e) => {
            println!("embedded  {} in {}{}", e.state, e.dir, e.port.map(|p| format!(", port {p}")).unwrap_or_default())
        }
        None => println!("embedded  none (`cargo xtask db up` creates one)"),
    }
    if let Some(t) = &r.template {
        if !t.exists {
            println!("template  {} — missing: create it with `cargo xtask db template create`", t.name);
        } else {
            let size = t.size_bytes.map(human_size).unwrap_or_default();
            let conns = t.connections.unwrap_or(0);
            println!("template  {} — {size}, {conns} connection(s)", t.name);
            match &t.migrations {
                Some(m) => {
                    let mut line = format!(
                        "          migrations: {} applied (latest {}), repository has {} (latest {})",
                        m.applied,
                        m.latest_applied.map(|v| v.to_string()).unwrap_or("-".into()),
                        t.repo_migrations,
                        t.repo_latest.map(|v| v.to_string()).unwrap_or("-".into())
                    );
                    if !m.pending.is_empty() {
                        line.push_str(&format!("; {} pending", m.pending.len()));
                    }
                    println!("{line}");
                    for (v, f) in &m.modified {
                        println!("          warning: migration {v} ({}) changed after it was applied", f.display());
                    }
                }
                None => println!("          (does not allow connections: ledger not read)"),
            }
        }
    }
    match &r.databases {
        None => println!("databases unknown: the server did not answer"),
        Some(dbs) if dbs.is_empty() => println!("databases (none besides the template)"),
        Some(dbs) => {
            println!("databases");
            for d in dbs {
                println!(
                    "  {:<40} {:<10} {:>10}  {} connection(s)",
                    d.name,
                    d.kind,
                    human_size(d.size_bytes),
                    d.connections
                );
                if let Some(b) = &d.branch {
                    let port = b.port.map(|p| format!(", PORT {p}")).unwrap_or_default();
                    let gone = if b.worktree_exists { "" } else { " — gone (`db worktrees --prune` drops it)" };
                    println!("    branch {}, worktree {}{port}{gone}", b.branch, b.worktree);
                }
            }
        }
    }
}
