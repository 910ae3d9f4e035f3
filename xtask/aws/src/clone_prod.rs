//! `db clone-prod`: snapshot → throwaway instance (or, for Aurora, a copy-on-write clone of the
//! cluster and an instance in it) → its own one-time password → tunnel → `pg_dump` → delete the
//! throwaway.
//!
//! Every setting and local prerequisite is checked first, before this tool is even built
//! ([`xtask::db::clone_prod::check`], which it calls again for its settings); then, read-only,
//! what AWS must hold (the source, the bastion, the snapshot, stored credentials or key). From the
//! restore request on, the instance's id is recorded, and the deletion runs after the pipeline
//! whatever ended it: success, an error, a signal (the pipeline notices within 100 ms; a pipeline
//! that does not end within 20 s is aborted), or a panic (the pipeline runs as its own task, whose
//! panic is caught). Only SIGKILL escapes it; the instance's `ExpiresAt` tag and
//! `list-clones --prune` are the backstop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use xtask::db::clone_prod::{Access, KeyFrom, Route};
use xtask::db::Ctx;
use xtask::error::{fail, report, Interrupted};
use xtask::flags::CloneProd;
use xtask::pg::dump::Format;
use xtask::pg::human_size;
use xtask::proc;
use xtask::time::{compact, elapsed, rfc3339};

use crate::aurora;
use crate::credentials::{self, Credentials, Password};
use crate::dump::{self, Target};
use crate::kit::{connect, Aws};
use crate::rds::{self, SnapshotChoice, Source};
use crate::tunnel::{self, SessionSlot, Tunnel};

/// What the throwaway is made from.
enum Kind {
    /// An RDS instance restored from a snapshot of the source instance.
    Snapshot(SnapshotChoice),
    /// A copy-on-write clone of the source Aurora cluster (`clone_id`), with one instance in it.
    Aurora(aurora::Plan),
}

/// Everything decided before AWS is changed.
struct Plan {
    source: Source,
    kind: Kind,
    clone_id: String,
    class: String,
    ttl: Duration,
    tunnel: tunnel::Plan,
    tunnel_timeout: Duration,
    access: Access,
    /// Who logs in, to which database (with stored credentials: what they say).
    username: Option<String>,
    dbname: Option<String>,
    dump: PathBuf,
    /// `pg_dump -Fd -j N` (a directory) or `-Fc` (`--jobs 1`, a file).
    dump_format: Format,
    pg_dump: PathBuf,
    /// Its major version: the newest server it can dump.
    pg_dump_major: u32,
    psql: PathBuf,
    now: SystemTime,
    /// Masking on the throwaway instance before pg_dump (`None`: no rules, or --unmasked).
    mask: Option<dump::Masking>,
    /// `--rehearse`: the rehearsal on the throwaway instead of the dump.
    rehearse: Option<Rehearsal>,
}

/// What `--rehearse` runs on the throwaway, and with which configuration.
struct Rehearsal {
    /// The `--set` overrides: the rehearsal loads its own `Ctx` on its thread.
    overrides: Vec<String>,
    report: Option<PathBuf>,
    format: xtask::flags::Format,
    max_lock_ms: Option<u64>,
    max_statement_ms: Option<u64>,
    smoke: bool,
}

/// How the pipeline ended well.
enum Done {
    /// The dump, this many bytes.
    Dumped(u64),
    Rehearsed,
}

pub async fn run(ctx: &Ctx, flags: CloneProd) -> Result<()> {
    let root = &ctx.config.root;
    let started = Instant::now();
    let now = SystemTime::now();
    let ts = compact(now);

    // Local checks first, all at once: nothing in AWS is touched when these fail.
    let checked = xtask::db::clone_prod::check(ctx, &flags)?;
    let settings = &checked.settings;

    // Read-only AWS calls: the source, its snapshots, the bastion.
    let aws = connect(ctx, &flags.aws).await?;
    let (source, cluster) = aurora::find_source(&aws.rds, &checked.source, &aws.region).await?;
    let source_id = source.id.clone();
    if source.major > checked.pg_dump_major {
        return Err(fail(
            format!(
                "`{source_id}` runs PostgreSQL {}, newer than the local pg_dump {}",
                source.engine_version, checked.pg_dump_major
            ),
            format!("install the PostgreSQL {} client programs (or point XTASK_PG_BINDIR at them)", source.major),
        ));
    }
    if flags.rehearse {
        // The gate compares the migrated throwaway with a fresh build on the local server: across
        // majors the comparison cannot be made. Found now, not after the migrations ran.
        let local = ctx.server()?;
        if local.major != source.major {
            return Err(fail(
                format!(
                    "`{source_id}` runs PostgreSQL {}, the local server {}: --rehearse's gate compares the two",
                    source.major, local.major
                ),
                format!(
                    "run the local server on PostgreSQL {} (XTASK_PG_BINDIR, then `cargo xtask db up`)",
                    source.major
                ),
            ));
        }
    }
    let kind = match cluster {
        // No snapshot: the live cluster is cloned.
        Some(c) => Kind::Aurora(aurora::plan(
            c,
            rds::identifier(&source_id, &format!("-clone-{ts}-1")),
            &settings.instance_class,
        )),
        None => {
            let snaps = rds::snapshots(&aws.rds, &source_id).await?;
            Kind::Snapshot(rds::choose(
                &snaps,
                now,
                settings.freshness,
                flags.fresh_snapshot,
                &rds::identifier(&source_id, &format!("-xtask-{ts}")),
            ))
        }
    };
    let tunnel = match &settings.tunnel {
        Route::Direct => tunnel::Plan::Direct,
        Route::Command(template) => tunnel::Plan::Command { template: template.clone() },
        Route::Ssm { bastion: name } => {
            let id = tunnel::find_bastion(&aws.sdk, name).await?;
            eprintln!("bastion: {id} (Name={name})");
            tunnel::Plan::Ssm {
                plugin: checked.plugin.clone().unwrap_or_default(),
                bastion: id,
                sdk: Box::new(aws.sdk.clone()),
                region: aws.region.clone(),
            }
        }
    };
    let mask = match &checked.mask {
        None => None,
        Some(m) => {
            let (key, from) = match &m.key {
                KeyFrom::Stored(source) => {
                    let text = credentials::read(&aws.sdk, source).await?;
                    if text.trim().len() < 16 {
                        return Err(fail(
                            format!("the masking key in the {source} is shorter than 16 bytes"),
                            "store a secret of at least 16 bytes there",
                        ));
                    }
                    (text.trim().as_bytes().to_vec(), source.to_string())
                }
                KeyFrom::Env { var, key } => (key.clone(), format!("${var}")),
            };
            Some(dump::Masking {
                rules: m.rules.clone(),
                key,
                key_env: from,
                ledger: ctx.config.ledger_table.clone(),
                known: xtask::mask::repository_sql(&ctx.config.root.join(&ctx.config.migrations_dir)),
            })
        }
    };
    // With stored credentials, the user and the database are in the secret (read only for a
    // real run); otherwise the master user (or --db-user), and the database named, else the
    // instance's own.
    let username = match &settings.access {
        Access::Stored(_) => None,
        Access::Iam { user: Some(u) } => Some(u.clone()),
        _ => Some(source.master_username.clone()),
    };
    if username.as_deref() == Some("") {
        return Err(fail(
            format!("AWS reports no master user for `{source_id}`"),
            "log in with --credentials-parameter / --credentials-secret, or --iam-auth --db-user NAME",
        ));
    }
    let dbname = match &settings.access {
        Access::Stored(_) => None,
        _ => Some(settings.dbname.clone().or_else(|| source.db_name.clone()).unwrap_or_else(|| "postgres".into())),
    };
    let plan = Plan {
        clone_id: rds::identifier(&source_id, &format!("-clone-{ts}")),
        class: settings.instance_class.clone(),
        ttl: settings.ttl,
        tunnel,
        tunnel_timeout: settings.tunnel_timeout,
        access: settings.access.clone(),
        username,
        dbname,
        dump: checked.dump_dir.join(format!("prod-{ts}.dump")),
        dump_format: Format::with_jobs(settings.dump_jobs),
        pg_dump: checked.pg_dump.clone(),
        pg_dump_major: checked.pg_dump_major,
        psql: checked.psql.clone(),
        now,
        source,
        kind,
        mask,
        rehearse: flags.rehearse.then(|| Rehearsal {
            overrides: ctx.overrides.clone(),
            report: flags.report.clone(),
            format: flags.format,
            max_lock_ms: flags.max_lock_ms,
            max_statement_ms: flags.max_statement_ms,
            smoke: !flags.no_smoke,
        }),
    };
    show(&plan, root, &aws.region);
    if flags.dry_run {
        eprintln!("dry run: nothing was created, changed or deleted");
        return Ok(());
    }
    let creds = match &plan.access {
        // Read before anything is created: a missing or malformed parameter costs nothing.
        Access::Stored(s) => credentials::fetch(&aws.sdk, s, settings.dbname.as_deref()).await?,
        // Generated before anything is created; set on the throwaway once it exists.
        access => Credentials {
            username: plan.username.clone().unwrap_or_default(),
            password: match access {
                Access::OneTime => Password::new(credentials::one_time_password()?),
                _ => Password::default(),
            },
            dbname: plan.dbname.clone().unwrap_or_default(),
        },
    };
    proc::check_interrupt()?;

    // From here on AWS is changed: the pipeline runs as a task of its own; the cleanup always runs.
    let state = Arc::new(Cleanup::default());
    let plan = Arc::new(plan);
    let mut work = tokio::spawn(pipeline(plan.clone(), aws.clone(), creds, state.clone()));
    let outcome = supervise(&mut work).await;
    let cleaned = cleanup(&plan, &aws, &state).await;
    match (outcome, cleaned) {
        (Ok(Done::Rehearsed), Ok(())) => {
            eprintln!("rehearsed on the throwaway in {}; it is deleted", elapsed(started.elapsed()));
            Ok(())
        }
        (Ok(Done::Dumped(size)), Ok(())) => {
            eprintln!(
                "dump ready: {} ({}) in {}",
                plan.dump.strip_prefix(root).unwrap_or(&plan.dump).display(),
                human_size(size as i64),
                elapsed(started.elapsed())
            );
            eprintln!("next: cargo xtask db load-clone   (see docs/runbooks/prod-clone-refactor-testing.md)");
            Ok(())
        }
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        // The throwaway may be left: that decides the exit code (2), not a rehearsal's verdict.
        (Err(e), Err(c)) => {
            eprintln!("{}", report(&e).line);
            Err(c)
        }
    }
}

fn show(plan: &Plan, root: &std::path::Path, region: &str) {
    eprintln!("plan:");
    match &plan.kind {
        Kind::Aurora(a) => aurora::show(a, &plan.source, &plan.clone_id, region, &rfc3339(plan.now + plan.ttl)),
        Kind::Snapshot(choice) => show_snapshot(plan, choice, region),
    }
    show_rest(plan, root);
}

/// The source, snapshot and throwaway lines of a restore from a snapshot.
fn show_snapshot(plan: &Plan, choice: &SnapshotChoice, region: &str) {
    let s = &plan.source;
    eprintln!(
        "  source       {} in {region}: PostgreSQL {}, {}, {} GiB, subnet group {}, security groups {}",
        s.id,
        s.engine_version,
        s.class,
        s.storage_gib,
        s.subnet_group.as_deref().unwrap_or("(default)"),
        if s.security_groups.is_empty() { "(default)".to_string() } else { s.security_groups.join(",") }
    );
    match choice {
        SnapshotChoice::Reuse { id, kind, age } => {
            eprintln!("  snapshot     reuse {id} ({kind}, {} old)", rds::hours(*age))
        }
        SnapshotChoice::Create { id, why } => eprintln!("  snapshot     create {id} ({why})"),
    }
    eprintln!(
        "  throwaway    {} ({}, gp3, single-AZ, private, no backups; expires {}; always deleted at the end)",
        plan.clone_id,
        plan.class,
        rfc3339(plan.now + plan.ttl)
    );
}

/// The lines after the throwaway's.
fn show_rest(plan: &Plan, root: &std::path::Path) {
    match &plan.tunnel {
        tunnel::Plan::Direct => eprintln!("  tunnel       direct (to the instance's endpoint)"),
        tunnel::Plan::Command { template } => eprintln!("  tunnel       command: {template}"),
        tunnel::Plan::Ssm { bastion, .. } => eprintln!("  tunnel       ssm through {bastion} ({})", tunnel::DOCUMENT),
    }
    let (user, db) = (plan.username.as_deref().unwrap_or("?"), plan.dbname.as_deref().unwrap_or("?"));
    match &plan.access {
        Access::OneTime => eprintln!(
            "  login        `{user}` to `{db}` with a one-time master password set on the throwaway after its restore (production's is never read; TLS required)"
        ),
        Access::Iam { .. } => eprintln!(
            "  login        `{user}` to `{db}` with IAM authentication (a token from your AWS session, renewed every 5 minutes; TLS required)"
        ),
        Access::Stored(s) => {
            eprintln!("  login        with the credentials in the {s} (read at run time; TLS required)")
        }
    }
    if plan.rehearse.is_some() {
        eprintln!(
            "  rehearse     this branch's pending migrations on the throwaway itself: traced, smoke-tested with the local app through the tunnel, gated against a fresh build on the local server; nothing is dumped or masked"
        );
        return;
    }
    match &plan.mask {
        Some(m) => eprintln!(
            "  masking      {} rule(s), key from {}: applied on the throwaway instance before pg_dump (the dump never holds the originals)",
            m.rules.len(),
            m.key_env
        ),
        None => eprintln!(
            "  masking      NONE: the dump holds production data as it is, personal data included (no rules in [workspace.metadata.db.mask.rules], or --unmasked)"
        ),
    }
    eprintln!(
        "  dump         {} ({}: {})",
        plan.dump.strip_prefix(root).unwrap_or(&plan.dump).display(),
        plan.dump_format.noun(),
        plan.dump_format.label()
    );
}

/// What the cleanup must undo, recorded as the pipeline goes.
#[derive(Default)]
struct Cleanup {
    /// Set just before the restore (or, for Aurora, the instance's creation) is requested (a
    /// failed request may still have created it).
    instance: Mutex<Option<String>>,
    /// The Aurora clone: set just before it is requested; deleted after its instance.
    cluster: Mutex<Option<String>>,
    session: SessionSlot,
    /// The task renewing the IAM token.
    renewal: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The RDS instance restored from the snapshot (made first when the plan says so); its endpoint
/// once available.
async fn restore(plan: &Plan, aws: &Aws, state: &Cleanup, choice: &SnapshotChoice) -> Result<rds::Endpoint> {
    let source = &plan.source;
    let snapshot = match choice {
        SnapshotChoice::Reuse { id, .. } => id.clone(),
        SnapshotChoice::Create { id, .. } => {
            xtask::term::announce(format_args!("creating the snapshot {id}"));
            rds::create_snapshot(&aws.rds, &source.id, id, rds::tags(&source.id, plan.now, plan.ttl)).await?;
            id.clone()
        }
    };
    proc::check_interrupt()?;
    xtask::term::announce(format_args!("restoring {} from {snapshot}", plan.clone_id));
    *state.instance.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan.clone_id.clone());
    rds::restore(
        &aws.rds,
        rds::Restore {
            id: &plan.clone_id,
            snapshot: &snapshot,
            class: &plan.class,
            source,
            tags: rds::tags(&source.id, plan.now, plan.ttl),
            iam_auth: matches!(plan.access, Access::Iam { .. }),
        },
    )
    .await
    .inspect_err(|e| {
        // Another run (the same second's) owns that instance: not ours to delete.
        if format!("{e:#}").contains("DBInstanceAlreadyExists") {
            *state.instance.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    })?;
    rds::wait_available(&aws.rds, &plan.clone_id).await
}

async fn pipeline(plan: Arc<Plan>, aws: Aws, creds: Credentials, state: Arc<Cleanup>) -> Result<Done> {
    let endpoint = match &plan.kind {
        Kind::Snapshot(choice) => restore(&plan, &aws, &state, choice).await?,
        Kind::Aurora(a) => {
            let tags = rds::tags(&plan.source.id, plan.now, plan.ttl);
            let iam = matches!(plan.access, Access::Iam { .. });
            let (cluster, instance) = (&state.cluster, &state.instance);
            aurora::create(&aws.rds, a, &plan.clone_id, &plan.source, tags, iam, cluster, instance).await?
        }
    };
    match &plan.access {
        Access::OneTime => {
            xtask::term::announce(format_args!("setting a one-time master password on {}", plan.clone_id));
            match &plan.kind {
                Kind::Snapshot(_) => rds::set_master_password(&aws.rds, &plan.clone_id, &creds.password.get()).await?,
                Kind::Aurora(_) => aurora::set_master_password(&aws.rds, &plan.clone_id, &creds.password.get()).await?,
            }
        }
        Access::Iam { .. } => {
            let token = || credentials::iam_token(&aws.sdk, &endpoint.host, endpoint.port, &creds.username);
            creds.password.set(token().await?);
            // A token admits new connections for 15 minutes: renewed every 5, for as long as the
            // pipeline runs (later connections, pg_dump's workers, a long masking run).
            let (sdk, host, port, user, password) =
                (aws.sdk.clone(), endpoint.host.clone(), endpoint.port, creds.username.clone(), creds.password.clone());
            state.renewal.lock().unwrap_or_else(|e| e.into_inner()).replace(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(300)).await;
                    match credentials::iam_token(&sdk, &host, port, &user).await {
                        Ok(t) => password.set(t),
                        Err(e) => eprintln!("warning: renewing the IAM token: {}", report(&e).line),
                    }
                }
            }));
        }
        Access::Stored(_) => {}
    }
    xtask::term::announce(format_args!("opening the tunnel to {}:{}", endpoint.host, endpoint.port));
    let mut tunnel = Tunnel::open(&plan.tunnel, &endpoint, plan.tunnel_timeout, &state.session).await?;
    let target = Target { host: tunnel.host.clone(), port: tunnel.port, credentials: creds };
    let major = dump::probe(&plan.psql, &target, plan.pg_dump_major, plan.access == Access::OneTime).await?;
    if let Some(r) = &plan.rehearse {
        xtask::term::announce(format_args!(
            "rehearsing this branch's migrations on {} itself (PostgreSQL {major}; nothing is dumped)",
            plan.clone_id
        ));
        // Never the source: the tunnel leads to the throwaway this run restored.
        anyhow::ensure!(plan.clone_id != plan.source.id, "refusing to rehearse on the source instance");
        let url = target.url()?;
        let (dbname, source) = (target.credentials.dbname.clone(), plan.source.id.clone());
        let (overrides, report, format) = (r.overrides.clone(), r.report.clone(), r.format);
        let (max_lock_ms, max_statement_ms, smoke) = (r.max_lock_ms, r.max_statement_ms, r.smoke);
        tokio::task::spawn_blocking(move || {
            let ctx = Ctx::load(&overrides)?;
            let server = xtask::pg::Server::connect(url, &dbname)?;
            let opts = xtask::db::rehearse::Remote {
                source: &source,
                report: report.as_deref(),
                format,
                max_lock_ms,
                max_statement_ms,
                smoke,
            };
            xtask::db::rehearse::remote(&ctx, &server, &dbname, opts)
        })
        .await??;
        tunnel.close();
        return Ok(Done::Rehearsed);
    }
    if let Some(m) = &plan.mask {
        // Never the source: the target is the throwaway this run restored (the tunnel leads to its
        // endpoint, and the instance id is the clone's).
        anyhow::ensure!(plan.clone_id != plan.source.id, "refusing to mask the source instance");
        dump::mask(&plan.psql, &target, m).await?;
    }
    xtask::term::announce(format_args!(
        "dumping `{}` (PostgreSQL {major}) as `{}` with {}",
        target.credentials.dbname,
        target.credentials.username,
        plan.dump_format.label()
    ));
    let size = dump::dump(&plan.pg_dump, &target, plan.dump_format, &plan.dump).await?;
    tunnel.close();
    Ok(Done::Dumped(size))
}

/// Waits for the pipeline. After a signal it has 20 s to notice and return before it is aborted.
async fn supervise<T>(work: &mut tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    let mut signalled: Option<Instant> = None;
    loop {
        tokio::select! {
            joined = &mut *work => {
                return match joined {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => Err(anyhow::anyhow!("clone-prod panicked (a bug; the throwaway instance is deleted now)")),
                    Err(_) => Err(Interrupted(proc::interrupted().unwrap_or(libc::SIGTERM)).into()),
                };
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if let Some(sig) = proc::interrupted() {
            let since = *signalled.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(20) {
                work.abort();
                let _ = (&mut *work).await;
                return Err(Interrupted(sig).into());
            }
        }
    }
}

/// Ends the SSM session, removes a partial dump, deletes the throwaway instance and then the
/// Aurora clone (tag-guarded, never the source). Not interruptible: a second Ctrl-C does not stop
/// it.
async fn cleanup(plan: &Plan, aws: &Aws, state: &Cleanup) -> Result<()> {
    if let Some(renewal) = state.renewal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        renewal.abort();
    }
    let session = state.session.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(id) = session {
        tunnel::terminate(&aws.sdk, &id).await;
    }
    xtask::pg::dump::remove(&xtask::pg::dump::partial_path(&plan.dump));
    let instance = state.instance.lock().unwrap_or_else(|e| e.into_inner()).take();
    let cluster = state.cluster.lock().unwrap_or_else(|e| e.into_inner()).take();
    // The source, and for Aurora its instances too (any instance of it is refused anyway).
    let mut protected = vec![plan.source.id.as_str()];
    if let Kind::Aurora(a) = &plan.kind {
        protected.extend(a.source.members.iter().map(String::as_str));
    }
    let said = |id: &str, outcome: rds::Deletion| {
        eprintln!(
            "  {id}: {}",
            match outcome {
                rds::Deletion::Requested => "deletion requested (gone in a few minutes)",
                rds::Deletion::InProgress => "already being deleted",
                rds::Deletion::NotFound => "gone (it was never created, or is deleted already)",
            }
        )
    };
    if let Some(id) = instance {
        xtask::term::announce(format_args!("deleting the throwaway instance {id}"));
        // A restore in progress may refuse deletion until it is available: be patient.
        match rds::delete(&aws.rds, &id, &protected, &aws.region, Duration::from_secs(3600)).await {
            Ok(outcome) => said(&id, outcome),
            // The cluster cannot go before its instance: both are left, and both commands said.
            Err(e) => {
                return match cluster {
                    None => Err(e),
                    Some(c) => {
                        let r = report(&e);
                        let line = r.line.strip_prefix("error: ").unwrap_or(&r.line);
                        let (message, fix) = match line.split_once(" — ") {
                            Some((m, f)) => (m, format!("{f}; then the cluster: ")),
                            None => (line, "then delete the cluster by hand: ".to_string()),
                        };
                        Err(fail(
                            format!(
                                "{message} (and the cluster `{c}` is left: it cannot be deleted before its instance)"
                            ),
                            format!("{fix}{}", rds::delete_cluster_command(&aws.region, &c)),
                        ))
                    }
                }
            }
        }
    }
    if let Some(id) = cluster {
        xtask::term::announce(format_args!("deleting the throwaway cluster {id}"));
        // AWS refuses while its instance is still being deleted: be patient.
        let outcome = rds::delete_cluster(&aws.rds, &id, &protected, &aws.region, Duration::from_secs(3600)).await?;
        said(&id, outcome);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_pipeline_is_an_error_not_an_unwind_past_the_cleanup() {
        let mut work = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if true {
                panic!("injected");
            }
            Ok(0u64)
        });
        let err = supervise(&mut work).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
    }

    #[tokio::test]
    async fn a_finished_pipeline_hands_back_its_result() {
        let mut work = tokio::spawn(async { Ok(42u64) });
        assert_eq!(supervise(&mut work).await.unwrap(), 42);
    }
}
