//! A production dump restored into the local copy `<prefix>prod_clone` (`db load-clone`, and `db
//! rehearse --from DUMP`), masked before it takes its name when asked.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{mask as masking, Ctx};
use crate::error::{fail, telling_line};
use crate::naming::Staging;
use crate::pg::staging::{self, sweep_abandoned, Old};
use crate::pg::{dump, human_size, tools, Kind, Marker, Server};
use crate::proc;
use crate::term::step;

/// Restores `dump` (else the newest dump in the dump directories) into `<prefix>prod_clone`,
/// masked first with `mask`; the previous copy goes only once the new one is complete. Returns
/// what `pg_restore` warned of (a missing role); `None` for a dry run (which says what it would
/// do).
pub fn load(ctx: &Ctx, dump: Option<PathBuf>, mask: bool, dry_run: bool) -> Result<Option<Vec<String>>> {
    let dump = match dump {
        Some(d) => d,
        None => newest_dump(&dump_dirs(ctx))?,
    };
    if dump.is_dir() && !dump::is_dump(&dump) {
        return Err(fail(
            format!("{} is a directory without toc.dat: not a finished `pg_dump -Fd` dump", dump.display()),
            "name a dump file or a dump directory that holds toc.dat (or run `cargo xtask db clone-prod` again)",
        ));
    }
    if !dump::is_dump(&dump) {
        return Err(fail(
            format!("dump {} does not exist", dump.display()),
            "run `cargo xtask db clone-prod` first, or name a dump file or directory",
        ));
    }
    // The key first: a missing one fails before minutes of restoring.
    let key = if mask { Some(masking::key(ctx)?) } else { None };
    let server = ctx.server()?;
    // A dry run changes nothing: not even what killed runs left is swept.
    if !dry_run {
        sweep_abandoned(&server, &ctx.config.prefix)?;
    }
    let name = ctx.config.prod_clone_db();
    staging::may_replace(
        &server,
        &name,
        |k| matches!(k, Kind::ProdClone { .. }),
        "made by `db load-clone`",
        "drop or rename it yourself",
        true,
    )?;
    let size = human_size(dump::size(&dump) as i64);
    if dry_run {
        let replacing = match server.database(&name)? {
            Some(old) => format!(", replacing the existing `{name}` ({})", human_size(old.size_bytes)),
            None => String::new(),
        };
        eprintln!("--dry-run: would restore {} ({size}) into `{name}`{replacing}; nothing is changed", dump.display());
        return Ok(None);
    }
    // Only once the new copy is complete does the old one go.
    let previous = format!("the previous `{name}`");
    let build = staging::Build {
        prefix: &ctx.config.prefix,
        what: Staging::Build,
        target: &name,
        marker: Marker::new(Kind::ProdClone { dump: dump.clone() }),
        old: Old::Replace { prefix: &ctx.config.prefix, force: true, what: &previous },
        settings: &[],
    };
    let warnings = staging::build_empty(&server, build, |staging| {
        let warnings = step(&format!("restoring {} ({size}) with pg_restore", dump.display()), || {
            restore(&server, staging, &dump)
        })?;
        if let Some(key) = &key {
            masking::apply(ctx, &server, staging, key)?;
        }
        // pg_restore leaves the statistics empty: the planner (and `db rehearse`'s row counts) need them.
        step("ANALYZE (pg_restore leaves no statistics)", || server.exec(staging, "ANALYZE"))?;
        Ok(warnings)
    })?;
    Ok(Some(warnings))
}

/// Where dumps are looked for: this worktree's dump directory, then the main worktree's (where
/// `clone-prod` usually writes them: it runs there).
pub fn dump_dirs(ctx: &Ctx) -> Vec<PathBuf> {
    let own = ctx.config.root.join(&ctx.config.aws.dump_dir);
    let mut dirs = vec![own.clone()];
    if let Ok(inside) = ctx.config.root.strip_prefix(&ctx.worktrees.current) {
        let main = ctx.worktrees.main.join(inside).join(&ctx.config.aws.dump_dir);
        if main != own {
            dirs.push(main);
        }
    }
    dirs
}

/// `prod-<yyyyMMddHHmmss>.dump` with the latest timestamp, in any of `dirs`: a `pg_dump -Fc`
/// file or a `pg_dump -Fd` directory (only one holding `toc.dat`: anything else is no dump).
fn newest_dump(dirs: &[PathBuf]) -> Result<PathBuf> {
    let mut dumps: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("prod-") && n.ends_with(".dump"))
                && dump::is_dump(p)
        })
        .collect();
    dumps.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    dumps.pop().ok_or_else(|| {
        let places = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ");
        fail(format!("no prod-*.dump in {places}"), "run `cargo xtask db clone-prod` first, or name a dump file")
    })
}

/// `pg_restore --no-owner --no-privileges -j <cores>` of a file or a directory (pg_restore reads
/// both in parallel); errors about missing roles are warnings, any other error is fatal.
fn restore(server: &Server, db: &str, dump: &Path) -> Result<Vec<String>> {
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string();
    // Not --exit-on-error: a missing role would be fatal too. Restore everything, then judge.
    let mut cmd =
        server.command(&tools::find("pg_restore")?, &["--no-owner", "--no-privileges", "-j", &jobs], db, &[dump])?;
    let (status, _, stderr) = proc::output(&mut cmd, None)?;
    proc::check_interrupt()?;
    let stderr = String::from_utf8_lossy(&stderr);
    let (warnings, fatal) = judge(&stderr);
    if !fatal.is_empty() || (!status.success() && warnings.is_empty()) {
        let first = fatal.first().cloned().unwrap_or_else(|| {
            Some(telling_line(&stderr)).filter(|l| !l.is_empty()).unwrap_or("pg_restore failed").to_string()
        });
        return Err(fail(
            format!("pg_restore failed ({} error(s)); first: {first}", fatal.len().max(1)),
            "check that the dump is complete and that this pg_restore is not older than the pg_dump that made it",
        ));
    }
    Ok(warnings)
}

/// Splits pg_restore's errors into warnings (missing roles) and fatal ones.
fn judge(stderr: &str) -> (Vec<String>, Vec<String>) {
    let (mut warnings, mut fatal) = (Vec::new(), Vec::new());
    for line in stderr.lines() {
        let Some(msg) = line.strip_prefix("pg_restore: error: ") else { continue };
        if msg.starts_with("warning: errors ignored on restore") {
            continue;
        }
        if msg.contains("role \"") && msg.contains("\" does not exist") {
            warnings.push(msg.to_string());
        } else {
            fatal.push(msg.to_string());
        }
    }
    (warnings, fatal)
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_roles_are_warnings_everything_else_is_fatal() {
        let stderr = "pg_restore: error: could not execute query: ERROR:  role \"reporting\" does not exist\n\
                      Command was: CREATE POLICY p ON t TO reporting USING (true);\n\
                      pg_restore: error: could not execute query: ERROR:  relation \"x\" already exists\n\
                      pg_restore: warning: errors ignored on restore: 2\n";
        let (w, f) = super::judge(stderr);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("reporting"));
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("already exists"));
    }
}
