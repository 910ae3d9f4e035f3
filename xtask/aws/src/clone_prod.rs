//! `db clone-prod`: snapshot → throwaway instance → tunnel → `pg_dump` → delete the throwaway.
//!
//! Everything that can be checked without changing AWS is checked first (the dump directory is
//! git-ignored, pg_dump is new enough, the plugin is installed, the source, bastion, snapshot
//! and credentials exist). From the restore request on, the instance's id is recorded, and the
//! deletion runs after the pipeline whatever ended it: success, an error, a signal (the pipeline
//! notices within 100 ms; a pipeline that does not end within 20 s is aborted), or a panic (the
//! pipeline runs as its own task, whose panic is caught). Only SIGKILL escapes it; the
//! instance's `ExpiresAt` tag and `list-clones --prune` are the backstop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use xtask::db::Ctx;
use xtask::error::{fail, report, Interrupted};
use xtask::flags::CloneProd;
use xtask::pg::dump::Format;
use xtask::pg::{human_size, tools};
use xtask::proc;
use xtask::time::{compact, elapsed, rfc3339};

use crate::credentials::{self, Credentials};
use crate::dump::{self, Target};
use crate::kit::{connect, Aws};
use crate::rds::{self, SnapshotChoice, Source};
use crate::settings::{self, Route};
use crate::tunnel::{self, SessionSlot, Tunnel};

/// Everything decided before AWS is changed.
struct Plan {
    source: Source,
    snapshot: SnapshotChoice,
    clone_id: String,
    class: String,
    ttl: Duration,
    tunnel: tunnel::Plan,
    tunnel_timeout: Duration,
    credentials: credentials::Source,
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
}

pub async fn run(ctx: &Ctx, flags: CloneProd) -> Result<()> {
    let conf = &ctx.config.aws;
    let root = &ctx.config.root;
    let started = Instant::now();
    let now = SystemTime::now();
    let ts = compact(now);

    // Local checks first: nothing in AWS is touched when these fail.
    let settings = settings::resolve(&flags, conf)?;
    let dump_dir = root.join(&conf.dump_dir);
    dump::check_ignored(root, &dump_dir)?;
    let pg_dump = tools::find("pg_dump")?;
    let psql = tools::find("psql")?;
    let pg_dump_major = tools::major_version(&pg_dump)?;
    // The rules and the key before anything: a missing key costs nothing.
    let rules = xtask::mask::parse_rules(&ctx.config.mask.rules)
        .map_err(|e| fail(format!("{e:#}"), "fix [workspace.metadata.db.mask.rules] in Cargo.toml"))?;
    let mc = &ctx.config.mask;
    let key_source = match (&mc.key_parameter, &mc.key_secret) {
        (Some(_), Some(_)) => {
            return Err(fail(
                "both `mask.key_parameter` and `mask.key_secret` are configured",
                "keep one of them in [workspace.metadata.db.mask]",
            ))
        }
        (Some(p), None) => Some(credentials::Source::Parameter(p.clone())),
        (None, Some(s)) => Some(credentials::Source::Secret(s.clone())),
        (None, None) => None,
    };
    let masking = !rules.is_empty() && !flags.unmasked;
    // From the environment, checked now; from AWS, read (read-only) before anything is created.
    let env_key = match (masking, &key_source) {
        (true, None) => Some(xtask::mask::key_from_env(&mc.key_env, "pass --unmasked to take production as it is")?),
        _ => None,
    };
    let plugin = match settings.tunnel {
        Route::Ssm { .. } => Some(tunnel::find_plugin()?),
        _ => None,
    };

    // Read-only AWS calls: the source, its snapshots, the bastion.
    let aws = connect(ctx, &flags.aws).await?;
    let source_id = aws.source.clone().ok_or_else(|| {
        fail(
            "no source instance is configured",
            "pass --source-instance ID, or set `source_instance` in [workspace.metadata.db.aws]",
        )
    })?;
    let source = rds::describe_source(&aws.rds, &source_id, &aws.region).await?;
    if source.major > pg_dump_major {
        return Err(fail(
            format!(
                "`{source_id}` runs PostgreSQL {}, newer than the local pg_dump {pg_dump_major}",
                source.engine_version
            ),
            format!("install the PostgreSQL {} client programs (or point XTASK_PG_BINDIR at them)", source.major),
        ));
    }
    let freshness = settings.freshness;
    let snaps = rds::snapshots(&aws.rds, &source_id).await?;
    let snapshot = rds::choose(
        &snaps,
        now,
        freshness,
        flags.fresh_snapshot,
        &rds::identifier(&source_id, &format!("-xtask-{ts}")),
    );
    let tunnel = match &settings.tunnel {
        Route::Direct => tunnel::Plan::Direct,
        Route::Command(template) => tunnel::Plan::Command { template: template.clone() },
        Route::Ssm { bastion: name } => {
            let id = tunnel::find_bastion(&aws.sdk, name).await?;
            eprintln!("bastion: {id} (Name={name})");
            tunnel::Plan::Ssm {
                plugin: plugin.unwrap_or_default(),
                bastion: id,
                sdk: Box::new(aws.sdk.clone()),
                region: aws.region.clone(),
            }
        }
    };
    let mask = if masking {
        let (key, from) = match (&key_source, env_key) {
            (Some(source), _) => {
                let text = credentials::read(&aws.sdk, source).await?;
                if text.trim().len() < 16 {
                    return Err(fail(
                        format!("the masking key in the {source} is shorter than 16 bytes"),
                        "store a secret of at least 16 bytes there",
                    ));
                }
                (text.trim().as_bytes().to_vec(), source.to_string())
            }
            (None, Some(key)) => (key, format!("${}", mc.key_env)),
            (None, None) => return Err(anyhow::anyhow!("no masking key was read (a bug)")),
        };
        Some(dump::Masking {
            rules,
            key,
            key_env: from,
            ledger: ctx.config.ledger_table.clone(),
            known: xtask::mask::repository_sql(&ctx.config.root.join(&ctx.config.migrations_dir)),
        })
    } else {
        None
    };
    let plan = Plan {
        clone_id: rds::identifier(&source_id, &format!("-clone-{ts}")),
        class: settings.instance_class.clone(),
        ttl: settings.ttl,
        tunnel,
        tunnel_timeout: settings.tunnel_timeout,
        credentials: settings.credentials.clone(),
        dump: dump_dir.join(format!("prod-{ts}.dump")),
        dump_format: Format::with_jobs(flags.jobs.unwrap_or(conf.dump_jobs)),
        pg_dump,
        pg_dump_major,
        psql,
        now,
        source,
        snapshot,
        mask,
    };
    show(&plan, root, &aws.region);
    if flags.dry_run {
        eprintln!("dry run: nothing was created, changed or deleted");
        return Ok(());
    }
    // Read before anything is created: a missing or malformed parameter costs nothing.
    let creds = credentials::fetch(&aws.sdk, &plan.credentials, settings.dbname.as_deref()).await?;
    proc::check_interrupt()?;

    // From here on AWS is changed: the pipeline runs as a task of its own; the cleanup always runs.
    let state = Arc::new(Cleanup::default());
    let plan = Arc::new(plan);
    let mut work = tokio::spawn(pipeline(plan.clone(), aws.clone(), creds, state.clone()));
    let outcome = supervise(&mut work).await;
    let cleaned = cleanup(&plan, &aws, &state).await;
    match (outcome, cleaned) {
        (Ok(size), Ok(())) => {
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
        (Err(e), cleaned) => {
            if let Err(c) = cleaned {
                eprintln!("error: {}", report(&c).line);
            }
            Err(e)
        }
    }
}

fn show(plan: &Plan, root: &std::path::Path, region: &str) {
    let s = &plan.source;
    eprintln!("plan:");
    eprintln!(
        "  source       {} in {region}: PostgreSQL {}, {}, {} GiB, subnet group {}, security groups {}",
        s.id,
        s.engine_version,
        s.class,
        s.storage_gib,
        s.subnet_group.as_deref().unwrap_or("(default)"),
        if s.security_groups.is_empty() { "(default)".to_string() } else { s.security_groups.join(",") }
    );
    match &plan.snapshot {
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
    match &plan.tunnel {
        tunnel::Plan::Direct => eprintln!("  tunnel       direct (to the instance's endpoint)"),
        tunnel::Plan::Command { template } => eprintln!("  tunnel       command: {template}"),
        tunnel::Plan::Ssm { bastion, .. } => eprintln!("  tunnel       ssm through {bastion} ({})", tunnel::DOCUMENT),
    }
    eprintln!("  credentials  {} (read at run time; TLS required)", plan.credentials);
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
    /// Set just before the restore is requested (a failed request may still have created it).
    instance: Mutex<Option<String>>,
    session: SessionSlot,
}

async fn pipeline(plan: Arc<Plan>, aws: Aws, creds: Credentials, state: Arc<Cleanup>) -> Result<u64> {
    let source = &plan.source;
    let snapshot = match &plan.snapshot {
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
        },
    )
    .await
    .inspect_err(|e| {
        // Another run (the same second's) owns that instance: not ours to delete.
        if format!("{e:#}").contains("DBInstanceAlreadyExists") {
            *state.instance.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    })?;
    let endpoint = rds::wait_available(&aws.rds, &plan.clone_id).await?;
    xtask::term::announce(format_args!("opening the tunnel to {}:{}", endpoint.host, endpoint.port));
    let mut tunnel = Tunnel::open(&plan.tunnel, &endpoint, plan.tunnel_timeout, &state.session).await?;
    let target = Target { host: tunnel.host.clone(), port: tunnel.port, credentials: creds };
    let major = dump::probe(&plan.psql, &target, plan.pg_dump_major).await?;
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
    Ok(size)
}

/// Waits for the pipeline. After a signal it has 20 s to notice and return before it is aborted.
async fn supervise(work: &mut tokio::task::JoinHandle<Result<u64>>) -> Result<u64> {
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

/// Ends the SSM session, removes a partial dump, deletes the throwaway instance (tag-guarded,
/// never the source). Not interruptible: a second Ctrl-C does not stop it.
async fn cleanup(plan: &Plan, aws: &Aws, state: &Cleanup) -> Result<()> {
    let session = state.session.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(id) = session {
        tunnel::terminate(&aws.sdk, &id).await;
    }
    xtask::pg::dump::remove(&xtask::pg::dump::partial_path(&plan.dump));
    let instance = state.instance.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(id) = instance else { return Ok(()) };
    xtask::term::announce(format_args!("deleting the throwaway instance {id}"));
    // A restore in progress may refuse deletion until it is available: be patient.
    match rds::delete(&aws.rds, &id, &[plan.source.id.as_str()], &aws.region, Duration::from_secs(3600)).await {
        Ok(outcome) => {
            eprintln!(
                "  {id}: {}",
                match outcome {
                    rds::Deletion::Requested => "deletion requested (gone in a few minutes)",
                    rds::Deletion::InProgress => "already being deleted",
                    rds::Deletion::NotFound => "gone (it was never created, or is deleted already)",
                }
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
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
