//! Replacing a named database is atomic under SIGKILL (issue 22): `load-clone`, `fresh`,
//! `template create --force`, `worktree --reset` and `rehearse --keep`, each killed outright
//! before the swap commits and after it (before the old copy is dropped), leave the old database
//! or the new one under the name — never neither — and the next run cleans up (or gives a
//! retired copy its name back when nothing took it).
//!
//! The run is stopped at each step from outside, without hooks: a session holds a lock (a COMMENT
//! in an open transaction) on the new copy, or — for a build quicker than the test can catch — on
//! the old one from before the run starts, so the swap's renames wait; killed there, nothing has
//! committed. For "after the commit", the run's stderr is a pipe this test
//! fills while the rename waits: once the lock is released the swap commits, and the run blocks
//! on the line it prints right after (before dropping the old copy) until it is killed.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;

use crate::drops::oid;
use crate::support::{dump, sql, Project};
use crate::worktree::{env_db, project, run_in, wait_for, worktree, Held};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    /// While the swap waits, before its transaction commits.
    BeforeCommit,
    /// After the swap committed, before the old copy is dropped.
    AfterCommit,
}

fn comment_of(db: &str) -> String {
    sql("postgres", &format!("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{db}'"))
}

/// The database a running build is making to become `target` (its staging marker says so).
fn staging_for(p: &Project, target: &str) -> Option<String> {
    sql(
        "postgres",
        &format!(
            "SELECT datname FROM pg_database WHERE starts_with(datname, '{}tmp_') \
             AND shobj_description(oid, 'pg_database') LIKE '%\"kind\":\"staging\"%' \
             AND shobj_description(oid, 'pg_database') LIKE '%\"for\":\"{target}\"%' \
             AND shobj_description(oid, 'pg_database') NOT LIKE '%\"retired\"%'",
            p.prefix
        ),
    )
    .lines()
    .next()
    .map(str::to_string)
}

fn leftovers(p: &Project) -> Vec<String> {
    p.databases().into_iter().filter(|d| d.contains("tmp_")).collect()
}

/// Waits until a held session has run `statement` and sits in its open transaction: on a loaded
/// machine the run started next could otherwise get past the lock before it is taken (CI once
/// timed out waiting for a swap that had not waited).
fn in_place(statement: &str) {
    wait_for(statement, || {
        sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND starts_with(query, '{}')",
                statement.replace('\'', "''")
            ),
        ) != "0"
    });
}

/// Whether a rename of `db` (the swap's) runs, and waits on a lock if `waiting`.
fn renaming(db: &str, waiting: bool) -> bool {
    let wait = if waiting { "wait_event_type = 'Lock' AND" } else { "" };
    sql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE {wait} \
             query LIKE 'ALTER DATABASE \"{db}\" RENAME%' AND pid <> pg_backend_pid()"
        ),
    ) != "0"
}

/// Fills the pipe that is process `pid`'s stderr (through a file description of our own, so the
/// process's own writes still block), so that its next line on stderr blocks.
fn fill_stderr_of(pid: u32) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/2"))
        .unwrap();
    for chunk in [&[b'.'; 4096][..], &[b'.'][..]] {
        loop {
            match f.write(chunk) {
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the pipe: {e}"),
            }
        }
    }
    f
}

/// Runs `argv` in `dir`, SIGKILLs it at `step` of replacing `target`, and checks what the name
/// holds: the old database before the commit, the new one after. Returns the new copy's oid.
///
/// `gate`, when given: a database and a statement run there in a transaction held while the build
/// runs (a build too quick to catch otherwise waits on it), rolled back once the swap is blocked.
fn kill_while_replacing(
    p: &Project,
    dir: &Path,
    argv: &[&str],
    target: &str,
    step: Step,
    gate: Option<(&str, &str)>,
    sweep: bool,
    hold: Hold,
) -> String {
    let old = oid(target);
    assert!(!old.is_empty(), "{target} must exist before it is replaced");
    let mut gate = gate.map(|(db, statement)| {
        let mut held = Held::open(db);
        held.run(&format!("BEGIN; {statement};"));
        in_place(statement);
        held
    });
    let mut blocker = Held::open("postgres");
    if hold == Hold::Target {
        let comment = format!("COMMENT ON DATABASE \"{target}\" IS '{}'", comment_of(target).replace('\'', "''"));
        blocker.run(&format!("BEGIN; {comment};"));
        in_place(&comment);
    }
    let mut child = p.command(dir, argv, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    wait_for("the new copy", || staging_for(p, target).is_some());
    let staging = staging_for(p, target).unwrap();
    let new = oid(&staging);
    let renamed = match hold {
        Hold::Target => target.to_string(),
        Hold::NewCopy => {
            blocker.run(&format!(
                "BEGIN; COMMENT ON DATABASE \"{staging}\" IS '{}';",
                comment_of(&staging).replace('\'', "''")
            ));
            staging.clone()
        }
    };
    if let Some(gate) = &mut gate {
        gate.run("ROLLBACK;");
    }
    wait_for("the swap to wait on the lock", || {
        if let Ok(Some(status)) = child.try_wait() {
            let mut said = String::new();
            let _ = stderr.read_to_string(&mut said);
            panic!("the run ended ({status}) before its swap waited on the lock:\n{said}");
        }
        renaming(&renamed, true)
    });
    let _filled = match step {
        Step::BeforeCommit => {
            child.kill().unwrap();
            child.wait().unwrap();
            blocker.run("ROLLBACK;");
            wait_for("the orphaned psql to finish", || !renaming(&renamed, false));
            None
        }
        Step::AfterCommit => {
            let filled = fill_stderr_of(child.id());
            blocker.run("ROLLBACK;");
            wait_for("the swap to commit", || oid(target) == new);
            // The run is now blocked on its stderr, right after the commit: the old copy is
            // still there, renamed aside.
            std::thread::sleep(std::time::Duration::from_millis(300));
            let retired: Vec<String> = leftovers(p).into_iter().filter(|d| oid(d) == old).collect();
            assert_eq!(retired.len(), 1, "the old copy is not renamed aside: {:?}", p.databases());
            assert!(comment_of(&retired[0]).contains("\"retired\""), "{}", comment_of(&retired[0]));
            child.kill().unwrap();
            child.wait().unwrap();
            Some(filled)
        }
    };
    drop(blocker);
    let mut said = Vec::new();
    if step == Step::BeforeCommit {
        stderr.read_to_end(&mut said).unwrap();
    }
    let said = String::from_utf8_lossy(&said);
    let now = oid(target);
    match step {
        Step::BeforeCommit => assert_eq!(now, old, "killed before the swap, `{target}` is not the old one:\n{said}"),
        Step::AfterCommit => assert_eq!(now, new, "killed after the swap, `{target}` is not the new one"),
    }
    if !sweep {
        return new;
    }
    // The next run sweeps what the killed one left; the name keeps what it had.
    p.xtask(&["db", "worktrees"]).ok();
    assert_eq!(leftovers(p), Vec::<String>::new(), "left behind after the sweep");
    assert_eq!(oid(target), now, "the sweep changed `{target}`");
    new
}

/// Which lock holds the swap: one on the old database, taken before the run starts, stops a build
/// too quick to catch (its swap renames the old one aside first); one on the new copy, taken once
/// it is seen, stops a run that touches the old one before its swap (`template create --force`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hold {
    Target,
    NewCopy,
}

fn each_step(p: &Project, dir: &Path, argv: &[&str], target: &str, gate: Option<(&str, &str)>, hold: Hold) {
    for step in [Step::BeforeCommit, Step::AfterCommit] {
        kill_while_replacing(p, dir, argv, target, step, gate, true, hold);
    }
}

#[test]
fn load_clone_killed_at_each_step_keeps_a_copy() {
    let p = project("rplc");
    dump(&p.template(), &p.dir.join("dump/prod-20260101000000.dump"));
    p.xtask(&["db", "load-clone"]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    each_step(&p, &p.dir, &["db", "load-clone"], &clone, None, Hold::Target);
}

#[test]
fn fresh_killed_at_each_step_keeps_a_copy() {
    let p = project("rpfresh");
    let fresh = p.xtask(&["db", "fresh"]).ok().stdout.trim().to_string();
    each_step(&p, &p.dir, &["db", "fresh"], &fresh, None, Hold::Target);
}

#[test]
fn template_rebuild_killed_at_each_step_keeps_a_template() {
    let p = project("rptmpl");
    each_step(&p, &p.dir, &["db", "template", "create", "--force", "-y"], &p.template(), None, Hold::NewCopy);
}

#[test]
fn reset_killed_at_each_step_keeps_the_branch_database() {
    let p = project("rpreset");
    let wt = worktree(&p, "reset-me");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    let db = env_db(&wt);
    // A clone is made in milliseconds: the streamed dump waits on a table lock until the test
    // holds the new copy.
    let argv = ["db", "worktree", "--reset", "-y", "--skip-generate", "--strategy", "dump"];
    let t = p.template();
    each_step(
        &p,
        &wt,
        &argv,
        &db,
        Some((t.as_str(), "LOCK TABLE crm.organizations IN ACCESS EXCLUSIVE MODE")),
        Hold::NewCopy,
    );
    // The branch database is still this worktree's: a run keeps it.
    let run = run_in(&p, &wt, &["--skip-generate"]).ok();
    assert!(run.stderr.contains("exists: kept as it is"), "{}", run.stderr);
}

#[test]
fn rehearse_keep_killed_at_each_step_keeps_a_copy() {
    let p = project("rpkeep");
    let prod = format!("{}prod", p.prefix);
    sql("postgres", &format!("CREATE DATABASE \"{prod}\" TEMPLATE \"{}\"", p.template()));
    let argv = ["db", "rehearse", "--from", prod.as_str(), "--no-smoke", "--keep"];
    p.xtask(&argv).ok();
    each_step(&p, &p.dir, &argv, &format!("{}rehearsal", p.prefix), None, Hold::NewCopy);
}

/// A copy renamed aside by a run killed after its swap, whose name is then free (its replacement
/// dropped meanwhile): the next run renames it back, with its marker, rather than dropping the
/// only copy left.
#[test]
fn a_retired_copy_whose_name_is_free_is_renamed_back() {
    let p = project("rpback");
    dump(&p.template(), &p.dir.join("dump/prod-20260101000000.dump"));
    p.xtask(&["db", "load-clone"]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    let old = oid(&clone);
    let marker = comment_of(&clone);
    kill_while_replacing_keeping_leftovers(&p, &clone);
    sql("postgres", &format!("DROP DATABASE \"{clone}\""));
    let run = p.xtask(&["db", "worktrees"]).ok();
    assert!(run.stderr.contains("renaming it back"), "{}", run.stderr);
    assert_eq!(oid(&clone), old, "{}", run.stderr);
    assert_eq!(comment_of(&clone), marker);
    assert_eq!(leftovers(&p), Vec::<String>::new());
    // And it is the tool's again: drop-clone recognises it.
    p.xtask(&["db", "drop-clone", "-y"]).ok();
    assert!(oid(&clone).is_empty());
}

/// A copy renamed aside by a run killed after its swap, whose replacement the user then drops
/// on purpose with the tool (`db drop-clone`): the old copy goes with it, and no later run
/// brings a dropped production clone back.
#[test]
fn a_drop_by_the_tool_takes_the_retired_copy_too() {
    let p = project("rpdrop");
    dump(&p.template(), &p.dir.join("dump/prod-20260101000000.dump"));
    p.xtask(&["db", "load-clone"]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    kill_while_replacing_keeping_leftovers(&p, &clone);
    // --dry-run drops nothing, the retired copy neither.
    p.xtask(&["db", "drop-clone", "-y", "--dry-run"]).ok();
    assert_eq!(leftovers(&p).len(), 1, "{:?}", p.databases());
    p.xtask(&["db", "drop-clone", "-y"]).ok();
    assert_eq!(leftovers(&p), Vec::<String>::new(), "{:?}", p.databases());
    let run = p.xtask(&["db", "worktrees"]).ok();
    assert!(!run.stderr.contains("renaming it back"), "{}", run.stderr);
    assert!(oid(&clone).is_empty(), "the dropped clone came back: {}", run.stderr);
}

/// The same for `worktree --drop` after a `--reset` killed past its swap: the branch database
/// dropped on purpose does not come back.
#[test]
fn worktree_drop_takes_the_retired_copy_too() {
    let p = project("rpwtdrop");
    let wt = worktree(&p, "drop-me");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    let db = env_db(&wt);
    let argv = ["db", "worktree", "--reset", "-y", "--skip-generate", "--strategy", "dump"];
    let t = p.template();
    let gate = Some((t.as_str(), "LOCK TABLE crm.organizations IN ACCESS EXCLUSIVE MODE"));
    kill_while_replacing(&p, &wt, &argv, &db, Step::AfterCommit, gate, false, Hold::NewCopy);
    assert_eq!(leftovers(&p).len(), 1, "{:?}", p.databases());
    p.xtask_in(&wt, &["db", "worktree", "--drop", "-y"], &[]).ok();
    assert_eq!(leftovers(&p), Vec::<String>::new(), "{:?}", p.databases());
    let run = p.xtask(&["db", "worktrees"]).ok();
    assert!(oid(&db).is_empty(), "the dropped branch database came back: {}", run.stderr);
}

/// `--dry-run` changes nothing: not even the sweep of what a killed run left (here, a retired
/// copy) runs, on every verb that takes it and sweeps.
#[test]
fn a_dry_run_sweeps_nothing() {
    let p = project("rpdry");
    dump(&p.template(), &p.dir.join("dump/prod-20260101000000.dump"));
    p.xtask(&["db", "load-clone"]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    kill_while_replacing_keeping_leftovers(&p, &clone);
    let wt = worktree(&p, "dry");
    for (dir, argv) in [
        (&p.dir, &["db", "fresh", "--dry-run"][..]),
        (&p.dir, &["db", "load-clone", "--dry-run"]),
        (&p.dir, &["db", "worktrees", "--prune", "--dry-run"]),
        (&wt, &["db", "worktree", "--dry-run", "--skip-generate"]),
        (&wt, &["db", "worktree", "--reset", "-y", "--dry-run", "--skip-generate"]),
    ] {
        let run = p.xtask_in(dir, argv, &[]);
        assert_eq!(leftovers(&p).len(), 1, "{argv:?} swept: {:?}\n{}", p.databases(), run.all());
    }
}

/// As [`kill_while_replacing`] after the commit, without the sweep afterwards.
fn kill_while_replacing_keeping_leftovers(p: &Project, target: &str) {
    // The lock on the old copy, before the run starts: a load of a small dump is quicker than the
    // test (see [`Hold`]).
    let mut blocker = Held::open("postgres");
    blocker.run(&format!("BEGIN; COMMENT ON DATABASE \"{target}\" IS '{}';", comment_of(target).replace('\'', "''")));
    let mut child =
        p.command(&p.dir, &["db", "load-clone"], &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let _stderr = child.stderr.take().unwrap();
    wait_for("the new copy", || staging_for(p, target).is_some());
    let staging = staging_for(p, target).unwrap();
    let new = oid(&staging);
    wait_for("the swap to wait on the lock", || renaming(target, true));
    let _filled = fill_stderr_of(child.id());
    blocker.run("ROLLBACK;");
    wait_for("the swap to commit", || oid(target) == new);
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(leftovers(p).len(), 1, "{:?}", p.databases());
}
