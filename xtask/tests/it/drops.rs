//! Drops that never surprise (issue 22): `--dry-run` wins over `-y` on every verb that drops or
//! replaces, a composite drop checks every step before it destroys anything, and wrapper verbs
//! refuse what they cannot pass on.

use std::path::Path;

use crate::support::{dump, git, sql, Project};
use crate::worktree::{env_db, project, run_in, worktree};

/// The oid of `db` (a replaced database has another), or "" when there is none.
pub(crate) fn oid(db: &str) -> String {
    sql("postgres", &format!("SELECT oid FROM pg_database WHERE datname = '{db}'"))
}

/// Every verb that drops, deletes or replaces a database, run with `--dry-run -y` (or
/// `--dry-run` where it takes no `-y`): every database is still the one it was.
#[test]
fn dry_run_wins_over_yes_on_every_verb_that_drops() {
    let p = project("drdry");
    let t = p.template();
    let wt = worktree(&p, "dry-branch");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    let db = env_db(&wt);
    let gone = worktree(&p, "dry-gone");
    run_in(&p, &gone, &["--skip-generate"]).ok();
    let orphan = env_db(&gone);
    git(&p.dir, &["worktree", "remove", "--force", gone.to_str().unwrap()]);
    dump(&t, &p.dir.join("dump/prod-20260101000000.dump"));
    p.xtask(&["db", "load-clone"]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    let fresh = p.xtask(&["db", "fresh"]).ok().stdout.trim().to_string();
    let before: Vec<(String, String)> =
        [&t, &db, &orphan, &clone, &fresh].iter().map(|d| (d.to_string(), oid(d))).collect();
    assert!(before.iter().all(|(_, o)| !o.is_empty()), "{before:?}");

    let runs: Vec<(&Path, Vec<&str>)> = vec![
        (&wt, vec!["db", "worktree", "--drop", "--dry-run", "-y"]),
        (&wt, vec!["db", "worktree", "--reset", "--dry-run", "-y"]),
        (&p.dir, vec!["db", "worktree", "--drop", "--dry-run", "-y", "--", "dry-branch"]),
        (&p.dir, vec!["db", "worktrees", "--prune", "--dry-run", "-y"]),
        (&p.dir, vec!["db", "drop-clone", "--dry-run", "-y"]),
        (&p.dir, vec!["db", "template", "create", "--force", "--dry-run", "-y"]),
        (&p.dir, vec!["db", "load-clone", "--dry-run"]),
        (&p.dir, vec!["db", "fresh", "--dry-run"]),
    ];
    for (dir, argv) in runs {
        let run = p.xtask_in(dir, &argv, &[]).ok();
        assert!(run.stderr.contains("--dry-run"), "{argv:?} does not say it is a dry run:\n{}", run.stderr);
        let after: Vec<(String, String)> = before.iter().map(|(d, _)| (d.clone(), oid(d))).collect();
        assert_eq!(after, before, "{argv:?} dropped or replaced something:\n{}", run.stderr);
        assert!(wt.is_dir(), "{argv:?} removed the worktree:\n{}", run.stderr);
    }
    // The questions name what they would have destroyed.
    let run = p.xtask_in(&p.dir, &["db", "worktree", "--drop", "--dry-run", "-y", "--", "dry-branch"], &[]).ok();
    assert!(run.stderr.contains(&db) && run.stderr.contains(&*wt.to_string_lossy()), "{}", run.stderr);
}

/// `worktree-remove` (`db worktree --drop BRANCH`) with an untracked file in the worktree: git
/// would refuse to remove it, so nothing is dropped either — before the question is even asked.
#[test]
fn a_worktree_git_would_keep_keeps_its_database() {
    let p = project("drdirty");
    let wt = worktree(&p, "dirty-branch");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    let db = env_db(&wt);
    std::fs::write(wt.join("notes.txt"), "mine\n").unwrap();
    let run = p.xtask(&["db", "worktree", "--drop", "-y", "--", "dirty-branch"]).fails(2, "notes.txt");
    assert!(run.stderr.contains("nothing dropped"), "{}", run.stderr);
    assert!(!oid(&db).is_empty(), "the database was dropped:\n{}", run.stderr);
    assert!(wt.join("notes.txt").is_file());
    // A change to a tracked file, likewise.
    std::fs::remove_file(wt.join("notes.txt")).unwrap();
    std::fs::write(wt.join("seed.sql"), "-- edited\n").unwrap();
    p.xtask(&["db", "worktree", "--drop", "-y", "--", "dirty-branch"]).fails(2, "seed.sql");
    assert!(!oid(&db).is_empty());
    // A locked one, likewise.
    git(&wt, &["checkout", "--", "seed.sql"]);
    git(&p.dir, &["worktree", "lock", wt.to_str().unwrap()]);
    p.xtask(&["db", "worktree", "--drop", "-y", "--", "dirty-branch"]).fails(2, "locked");
    assert!(!oid(&db).is_empty());
    git(&p.dir, &["worktree", "unlock", wt.to_str().unwrap()]);
    // Clean: both go.
    p.xtask(&["db", "worktree", "--drop", "-y", "--", "dirty-branch"]).ok();
    assert!(oid(&db).is_empty());
    assert!(!wt.exists());
}

/// `db psql` passes on only what follows `--`: a flag before it is refused, not silently
/// passed on in a place where it breaks psql's connection.
#[test]
fn psql_refuses_flags_before_the_double_dash() {
    let p = project("drpsql");
    let run = p.xtask(&["db", "psql", "-x", "--", "-c", "select 1"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("-x"), "{}", run.stderr);
    let run = p.xtask(&["db", "psql", "--", "-A", "-t", "-c", "select 40 + 2"]).ok();
    assert_eq!(run.stdout.trim(), "42", "{}", run.stderr);
}

/// `load-clone` in a linked worktree finds the dump `clone-prod` wrote into the main
/// worktree's dump directory.
#[test]
fn load_clone_in_a_linked_worktree_finds_the_main_worktree_s_dumps() {
    let p = project("drdump");
    dump(&p.template(), &p.dir.join("dump/prod-20260101000000.dump"));
    let wt = worktree(&p, "dump-branch");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    let run = p.xtask_in(&wt, &["db", "load-clone"], &[]).ok();
    assert!(run.stderr.contains("prod-20260101000000.dump"), "{}", run.stderr);
    assert!(!oid(&format!("{}prod_clone", p.prefix)).is_empty());
    // Without any dump, the error names both places.
    let q = Project::new("drnodump");
    let wt = worktree(&q, "no-dump");
    let run = q.xtask_in(&wt, &["db", "load-clone"], &[]).fails(2, "no prod-*.dump");
    assert!(run.stderr.contains(&*q.dir.join("dump").to_string_lossy()), "{}", run.stderr);
}

/// `schema-diff fresh current` in a new worktree, before `db fresh`: the fix names `db fresh`,
/// not `db template create` (the template exists).
#[test]
fn a_missing_fresh_side_names_db_fresh_as_the_fix() {
    let p = project("drsdfix");
    let wt = worktree(&p, "sd-branch");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    let run = p.xtask_in(&wt, &["db", "schema-diff", "fresh", "current"], &[]).fails(2, "`cargo xtask db fresh`");
    assert!(!run.stderr.contains("template create"), "{}", run.stderr);
    p.xtask_in(&wt, &["db", "fresh"], &[]).ok();
    p.xtask_in(&wt, &["db", "schema-diff", "fresh", "current"], &[]).ok();
}
