//! The adversarial pass over `db worktree` (issue 10): every way found to get a stale clone, to
//! lose a database that is not ours, or to make concurrent runs fail each other — each one here,
//! against the real server.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{git, password, sql, try_sql, url_for, Project};
use crate::worktree::{env_db, fingerprint, project, run_in, spare_project, wait_for, worktree, Held};

/// A project whose template has an idle connection on it (so `auto` takes the frozen path) and
/// a current frozen copy.
fn busy_project(tag: &str) -> (Project, Held) {
    busy_project_with(tag, "CREATE TABLE public.probe (id int PRIMARY KEY)")
}

/// [`busy_project`], the template made with `setup` first.
pub(crate) fn busy_project_with(tag: &str, setup: &str) -> (Project, Held) {
    let p = project(tag);
    sql(&p.template(), setup);
    let held = Held::open(&p.template());
    wait_for("the held connection", || connections(&p.template()) > 0);
    let wt = worktree(&p, &format!("{tag}-first"));
    run_in(&p, &wt, &["--skip-generate"]).ok();
    (p, held)
}

fn connections(db: &str) -> i64 {
    sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'")).parse().unwrap()
}

fn has_probe(db: &str, id: i64) -> bool {
    sql(db, &format!("SELECT count(*) FROM public.probe WHERE id = {id}")) == "1"
}

/// A psql on `db` that runs `script` in the background.
fn background(db: &str, script: &str) -> std::process::Child {
    let url = url_for(db).replacen(&format!(":{}@", password()), "@", 1);
    Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c", script])
        .env("PGPASSWORD", password())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_commit_inside_a_running_do_block_is_never_missed() {
    let (p, _held) = busy_project("atdo");
    let t = p.template();
    // The block starts before the next copy is made and commits while it is being used.
    let mut block = background(
        &t,
        "DO $$ BEGIN PERFORM pg_sleep(1); INSERT INTO public.probe VALUES (1); COMMIT; PERFORM pg_sleep(600); END $$;",
    );
    wait_for("the block to run", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'active'"))
            == "1"
    });
    let during = worktree(&p, "do-during");
    run_in(&p, &during, &["--skip-generate"]).ok();
    wait_for("the block's commit", || has_probe(&t, 1));
    let after = worktree(&p, "do-after");
    let run = run_in(&p, &after, &["--skip-generate"]).ok();
    assert!(has_probe(&env_db(&after), 1), "the clone misses the committed row:\n{}", run.stderr);
    let _ = block.kill();
    let _ = block.wait();
}

#[test]
fn setval_on_a_never_used_sequence_is_never_missed() {
    let (p, mut held) = busy_project("atseq");
    let t = p.template();
    sql(&t, "CREATE SEQUENCE public.fresh_seq");
    let wt = worktree(&p, "seq-made");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    // On the held session (stays connected) ...
    held.run("SELECT setval('public.fresh_seq', 4242, false);");
    wait_for("setval", || sql(&t, "SELECT last_value FROM public.fresh_seq") == "4242");
    let a = worktree(&p, "seq-held");
    run_in(&p, &a, &["--skip-generate"]).ok();
    assert_eq!(sql(&env_db(&a), "SELECT nextval('public.fresh_seq')"), "4242");
    // ... and from a session that leaves right after, in a transaction that rolls back.
    sql(&t, "BEGIN; SELECT setval('public.fresh_seq', 777, false); ROLLBACK;");
    let b = worktree(&p, "seq-gone");
    run_in(&p, &b, &["--skip-generate"]).ok();
    assert_eq!(sql(&env_db(&b), "SELECT nextval('public.fresh_seq')"), "777");
}

/// Row changes that are not counted cannot be seen in the counters: a template whose sessions
/// do not count them (`ALTER DATABASE … SET track_counts = off`, the same for a role, or a role
/// granted the right to set it) is never taken as current. (A superuser that turns counting off
/// for its own session is the one case the counters cannot see: `pg/freshness.rs` says so.)
#[test]
fn a_template_whose_row_changes_are_not_counted_is_never_taken_as_current() {
    let (p, _held) = busy_project("attrack");
    let t = p.template();
    sql("postgres", &format!("ALTER DATABASE {t} SET track_counts = off"));
    sql(&t, "INSERT INTO public.probe VALUES (1)");
    let a = worktree(&p, "track-db");
    let run = run_in(&p, &a, &["--skip-generate"]).ok();
    assert!(has_probe(&env_db(&a), 1), "{}", run.stderr);
    assert!(run.stderr.contains("not counted"), "{}", run.stderr);
    // Connected before the copy, idle while it is made, then commits and leaves.
    let mut early = Held::open(&t);
    early.run("SELECT 1;");
    wait_for("the early session to be idle", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'idle'"))
            == "2"
    });
    let b = worktree(&p, "track-copy");
    run_in(&p, &b, &["--skip-generate"]).ok();
    early.run("INSERT INTO public.probe VALUES (2);");
    wait_for("the commit", || has_probe(&t, 2));
    drop(early);
    wait_for("the early session to leave", || connections(&t) == 1);
    let c = worktree(&p, "track-left");
    run_in(&p, &c, &["--skip-generate"]).ok();
    assert!(has_probe(&env_db(&c), 2));
    sql("postgres", &format!("ALTER DATABASE {t} RESET track_counts"));
}

#[test]
fn a_prepared_transaction_on_the_template_is_handled() {
    let p = project("atprep");
    let t = p.template();
    sql(&t, "CREATE TABLE public.probe (id int PRIMARY KEY)");
    let gid = format!("{}px", p.prefix);
    sql(&t, &format!("BEGIN; INSERT INTO public.probe VALUES (9); PREPARE TRANSACTION '{gid}'"));
    // Whatever happens below, the prepared transaction must not outlive the test (it would keep
    // the template from being dropped).
    struct Finish(String, String);
    impl Drop for Finish {
        fn drop(&mut self) {
            let _ = try_sql(&self.0, &format!("ROLLBACK PREPARED '{}'", self.1));
        }
    }
    let _finish = Finish(t.clone(), gid.clone());
    // Nobody is connected, yet a direct copy is refused: auto goes another way.
    let a = worktree(&p, "prep-auto");
    let run = run_in(&p, &a, &["--skip-generate"]).ok();
    assert!(run.stderr.contains("prepared transaction"), "{}", run.stderr);
    // --strategy template names the cause and the fix.
    let b = worktree(&p, "prep-template");
    let run = run_in(&p, &b, &["--strategy", "template", "--skip-generate"]).fails(2, "prepared transaction");
    assert!(run.stderr.contains("COMMIT PREPARED"), "{}", run.stderr);
    // Committing it later is a change: the next clone has the row.
    sql(&t, &format!("COMMIT PREPARED '{gid}'"));
    let c = worktree(&p, "prep-done");
    run_in(&p, &c, &["--skip-generate"]).ok();
    assert!(has_probe(&env_db(&c), 9));
}

#[test]
fn the_clone_does_not_depend_on_the_path_taken() {
    let p = project("atpriv");
    let t = p.template();
    let role = format!("{}reader", p.prefix);
    let _ = try_sql("postgres", &format!("CREATE ROLE {role}"));
    sql(&t, &format!("GRANT USAGE ON SCHEMA crm TO {role}; GRANT SELECT ON crm.organizations TO {role}; CREATE PUBLICATION {role}_pub FOR TABLE crm.organizations"));
    let acl = |db: &str| {
        sql(db, "SELECT coalesce(relacl::text, '') FROM pg_class WHERE oid = 'crm.organizations'::regclass")
            + &sql(db, "SELECT string_agg(pubname, ',') FROM pg_publication")
    };
    let direct = worktree(&p, "priv-direct");
    run_in(&p, &direct, &["--skip-generate"]).ok();
    let _held = Held::open(&t);
    wait_for("the held connection", || connections(&t) > 0);
    let frozen = worktree(&p, "priv-frozen");
    let run = run_in(&p, &frozen, &["--skip-generate"]).ok();
    assert!(run.stderr.contains("frozen copy"), "{}", run.stderr);
    let dump = worktree(&p, "priv-dump");
    run_in(&p, &dump, &["--strategy", "dump", "--skip-generate"]).ok();
    for wt in [&frozen, &dump] {
        assert_eq!(acl(&env_db(wt)), acl(&env_db(&direct)), "privileges and publications differ by path");
        let (a, b) = (fingerprint(&env_db(wt)), fingerprint(&env_db(&direct)));
        assert_eq!(a.0, b.0, "row counts differ by path");
        let diff: Vec<_> = a.1.lines().zip(b.1.lines()).filter(|(x, y)| x != y).take(5).collect();
        assert!(a.1 == b.1, "schemas differ by path: {diff:?}");
    }
    drop(p);
    let _ = try_sql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

/// `--prune --dry-run` names what it would drop and drops nothing; `--prune -y` then drops it.
#[test]
fn prune_dry_run_drops_nothing() {
    let p = project("atdry");
    let wt = worktree(&p, "gone-soon");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    let db = env_db(&wt);
    git(&p.dir, &["worktree", "remove", "--force", wt.to_str().unwrap()]);
    let dry = p.xtask(&["db", "worktrees", "--prune", "--dry-run"]).ok();
    assert!(
        dry.stderr.contains(&db) && dry.stderr.contains("--dry-run") && dry.stderr.contains("nothing dropped"),
        "{}",
        dry.stderr
    );
    assert!(p.databases().contains(&db), "--dry-run dropped it");
    p.xtask(&["db", "worktrees", "--prune", "-y"]).ok();
    assert!(!p.databases().contains(&db), "--prune left it");
}

#[test]
fn prune_keeps_the_database_of_a_moved_worktree() {
    let p = project("atmove");
    let wt = worktree(&p, "movable");
    run_in(&p, &wt, &["--skip-generate"]).ok();
    let db = env_db(&wt);
    sql(&db, "INSERT INTO crm.organizations (name, slug) VALUES ('Mine', 'mine')");
    let moved = wt.with_file_name(format!("{}-moved", wt.file_name().unwrap().to_string_lossy()));
    git(&p.dir, &["worktree", "move", wt.to_str().unwrap(), moved.to_str().unwrap()]);
    let list = p.xtask(&["db", "worktrees"]).ok();
    assert!(!list.stdout.contains("gone"), "{}", list.stdout);
    p.xtask(&["db", "worktrees", "--prune", "-y"]).ok();
    assert!(p.databases().contains(&db), "the moved worktree's database was dropped");
    // The moved worktree still owns it: a run keeps it, --drop may drop it.
    let run = run_in(&p, &moved, &["--skip-generate"]).ok();
    assert!(run.stderr.contains("exists: kept as it is"), "{}", run.stderr);
    assert_eq!(sql(&db, "SELECT count(*) FROM crm.organizations WHERE slug = 'mine'"), "1");
    run_in(&p, &moved, &["--drop", "-y"]).ok();
    assert!(!p.databases().contains(&db));
}

#[test]
fn two_clones_of_the_repository_never_share_a_database() {
    let first = project("atrepo");
    // A second clone of the same repository, same prefix and template, same server.
    let second_dir = first.dir.with_file_name(format!("{}-second", first.dir.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_dir_all(&second_dir);
    git(first.dir.parent().unwrap(), &["clone", "-q", first.dir.to_str().unwrap(), second_dir.to_str().unwrap()]);
    std::fs::copy(first.dir.join(".env"), second_dir.join(".env")).unwrap();
    let second = Project { dir: second_dir.clone(), prefix: first.prefix.clone() };

    let a = worktree(&first, "shared-name");
    run_in(&first, &a, &["--skip-generate"]).ok();
    let db = env_db(&a);
    sql(&db, "INSERT INTO crm.organizations (name, slug) VALUES ('First', 'first')");

    let b = worktree(&second, "shared-name");
    let run = run_in(&second, &b, &["--skip-generate"]).ok();
    assert_ne!(env_db(&b), db, "the second clone took over the first's database:\n{}", run.stderr);
    assert!(run.stderr.contains("another clone of the repository"), "{}", run.stderr);
    // --drop in the second clone drops its own, never the first's.
    run_in(&second, &b, &["--drop", "-y"]).ok();
    assert_eq!(sql(&db, "SELECT count(*) FROM crm.organizations WHERE slug = 'first'"), "1");
    // And running again there keeps using its own name.
    run_in(&second, &b, &["--skip-generate"]).ok();
    assert_ne!(env_db(&b), db);
    std::mem::forget(second); // `first` drops the shared prefix's databases.
    let _ = std::fs::remove_dir_all(&second_dir);
}

#[test]
fn two_runs_for_one_name_take_turns() {
    let p = project("atsame");
    let wt = worktree(&p, "same-name");
    let spawn = || p.command(&wt, &["db", "worktree", "--skip-generate"], &[]).stderr(Stdio::piped()).spawn().unwrap();
    let (x, y) = (spawn(), spawn());
    let mut kept = 0;
    for child in [x, y] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        kept += usize::from(stderr.contains("exists: kept as it is"));
    }
    // One made it, the other waited and found it; one database, the one .env names.
    assert_eq!(kept, 1);
    let db = env_db(&wt);
    assert_eq!(p.databases().iter().filter(|d| d.contains("same_name")).collect::<Vec<_>>(), vec![&db]);
}

/// 20 runs back to back while another session keeps committing to the template and a psql holds
/// it, with background refills of the spare racing them: every run succeeds and every clone has
/// every change committed before it started.
#[test]
fn stress_back_to_back_runs_on_a_busy_changing_template() {
    let p = spare_project("atstress");
    let t = p.template();
    sql(&t, "CREATE TABLE public.probe (id int PRIMARY KEY)");
    let _held = Held::open(&t);

    let committed = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (committed, stop, t) = (Arc::clone(&committed), Arc::clone(&stop), t.clone());
        std::thread::spawn(move || {
            let mut id = 0;
            while !stop.load(Ordering::SeqCst) && id < 5000 {
                id += 1;
                sql(&t, &format!("INSERT INTO public.probe VALUES ({id})"));
                committed.store(id, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(37));
            }
        })
    };
    wait_for("the first commit", || committed.load(Ordering::SeqCst) > 0);
    let mut failures = Vec::new();
    for i in 0..20 {
        let before = committed.load(Ordering::SeqCst);
        let wt = worktree(&p, &format!("stress-{i}"));
        let run = run_in(&p, &wt, &["--skip-generate"]);
        if run.code != 0 {
            failures.push(format!("run {i}: {}", run.stderr));
            continue;
        }
        let db = env_db(&wt);
        let have: i64 = sql(&db, &format!("SELECT count(*) FROM public.probe WHERE id <= {before}")).parse().unwrap();
        if have != before {
            failures.push(format!(
                "run {i}: clone has {have} of the {before} rows committed before it started\n{}",
                run.stderr
            ));
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// The pid of the backend of a session waiting for a lock while running a statement like `like`.
fn waiting_on_a_lock(like: &str) -> bool {
    sql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '{like}' AND pid <> pg_backend_pid()"
        ),
    ) != "0"
}

fn still_running(like: &str) -> bool {
    sql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '{like}' AND pid <> pg_backend_pid()"),
    ) != "0"
}

/// A rebuild killed (SIGKILL, no cleanup) while its swap waits on a lock: the psql it leaves
/// behind must not finish half a swap, and the next run still finds the template it had.
#[test]
fn a_rebuild_killed_while_its_swap_waits_never_loses_the_template() {
    let p = project("atkill");
    let t = p.template();
    sql(&t, "INSERT INTO crm.organizations (name, slug) VALUES ('Old', 'old')");
    // Another session holds a lock on the template (as a COMMENT in an open transaction does):
    // renaming it waits.
    let comment = sql(
        "postgres",
        &format!(
            "SELECT format('COMMENT ON DATABASE %I IS %L', datname, shobj_description(oid, 'pg_database')) FROM pg_database WHERE datname = '{t}'"
        ),
    );
    let mut blocker = Held::open("postgres");
    blocker.run(&format!("BEGIN; {comment};"));
    wait_for("the blocking lock", || {
        sql("postgres", "SELECT count(*) FROM pg_locks WHERE locktype = 'object' AND classid = 'pg_database'::regclass AND granted AND pid <> pg_backend_pid()") != "0"
    });
    let mut child =
        p.command(&p.dir, &["db", "template", "create", "--force", "-y"], &[]).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the swap to wait on the lock", || waiting_on_a_lock("ALTER DATABASE%RENAME%"));
    child.kill().unwrap(); // SIGKILL: nothing of the run's own cleanup runs.
    child.wait().unwrap();
    blocker.run("ROLLBACK;");
    wait_for("the orphaned psql to finish", || !still_running("ALTER DATABASE%RENAME%"));
    drop(blocker);

    let wt = worktree(&p, "after-kill");
    let run = run_in(&p, &wt, &["--skip-generate"]).ok();
    assert_eq!(
        sql(&env_db(&wt), "SELECT count(*) FROM crm.organizations WHERE slug = 'old'"),
        "1",
        "the clone is not of the old template:\n{}",
        run.stderr
    );
    let marker = sql(
        "postgres",
        &format!("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{t}'"),
    );
    assert!(marker.contains("\"kind\":\"template\""), "{marker}");
    // What the killed run left (its unfinished new template) is gone after that run's sweep.
    assert!(!p.databases().iter().any(|d| d.contains("tmp_")), "{:?}", p.databases());
}

/// A run's staging database, with the longest prefix allowed, survives sweeps by concurrent
/// runs: its name is whole (not cut to 63 bytes) and its maker is alive.
#[test]
fn a_concurrent_sweep_never_drops_a_live_run_s_staging_database() {
    let p = Project::new("atsweep");
    let long = format!("{:x<45}", p.prefix);
    let template = format!("{long}template");
    let env = [("XTASK_DB_PREFIX", long.as_str()), ("WORKTREE_TEMPLATE_DB", template.as_str())];
    let seed = std::fs::read_to_string(p.dir.join("seed.sql")).unwrap();
    std::fs::write(p.dir.join("seed.sql"), format!("{seed}\nSELECT pg_sleep(4);\n")).unwrap();
    let child = p.command(&p.dir, &["db", "template", "create"], &env).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the staging database", || p.databases().iter().any(|d| d.contains("tmp_")));
    let staging: Vec<String> = p.databases().into_iter().filter(|d| d.contains("tmp_")).collect();
    assert!(staging[0].len() < 63, "{staging:?}");
    for _ in 0..3 {
        p.xtask_in(&p.dir, &["db", "worktrees", "--prune", "-y"], &env).ok();
        assert_eq!(p.databases().into_iter().filter(|d| d.contains("tmp_")).collect::<Vec<_>>(), staging);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(p.databases(), vec![template]);
}

/// A spare found stale at the moment it is taken: the run copies instead, the clone has the
/// change, and the report says what was used, not "spare".
#[test]
fn a_failed_spare_take_reports_what_was_used() {
    let p = spare_project("attake");
    let t = p.template();
    sql(&t, "CREATE TABLE public.probe (id int PRIMARY KEY)");
    let first = worktree(&p, "take-first");
    run_in(&p, &first, &["--skip-generate"]).ok();
    let spares =
        || sql("postgres", &format!("SELECT datname FROM pg_database WHERE datname LIKE '{}spare%'", p.prefix));
    wait_for("the spare", || !spares().is_empty());
    let spare = spares();
    wait_for("the refill to finish", || {
        std::fs::read_to_string(p.dir.join(".git/xtask-db/refill.log")).is_ok_and(|l| l.contains("prepared"))
    });
    // The next run plans to take the spare; hold the spare's lock so it waits right there, and
    // change the template meanwhile.
    let mut lock = Held::open("postgres");
    lock.run(&format!("SELECT pg_advisory_lock(hashtextextended('xtask-db spare:{spare}', 0));"));
    wait_for("the lock", || {
        sql(
            "postgres",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
        ) != "0"
    });
    let wt = worktree(&p, "take-late");
    let child = p.command(&wt, &["db", "worktree", "--skip-generate"], &[]).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the run to wait for the spare", || {
        sql("postgres", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") != "0"
    });
    sql(&t, "INSERT INTO public.probe VALUES (1)");
    drop(lock);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(has_probe(&env_db(&wt), 1), "the clone misses the change:\n{stderr}");
    assert!(stderr.contains("the spare clone was gone or stale when taken"), "{stderr}");
    let created = stderr.lines().find(|l| l.contains("created")).unwrap_or_default();
    assert!(!created.contains("spare"), "the report says spare:\n{stderr}");
}

/// Background refills log inside the repository's own git directory, and a failure is reported
/// by the next run, once.
#[test]
fn a_failed_refill_is_logged_in_the_repository_and_reported_once() {
    let p = spare_project("atrefill");
    let first = worktree(&p, "refill-first");
    run_in(&p, &first, &["--skip-generate"]).ok();
    let log = p.dir.join(".git/xtask-db/refill.log");
    wait_for("the refill's log", || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("spare clone")));
    // A refill that fails (here: its template is gone from under it) leaves word.
    let gone = format!("{}gone", p.prefix);
    p.xtask_in(&first, &["db", "refill-spare"], &[("WORKTREE_TEMPLATE_DB", gone.as_str())]).fails(2, "does not exist");
    assert!(p.dir.join(".git/xtask-db/refill.failed").is_file());
    let second = worktree(&p, "refill-second");
    let run = run_in(&p, &second, &["--skip-generate"]).ok();
    assert!(run.stderr.contains("the last background refill of the spare clone failed"), "{}", run.stderr);
    assert!(run.stderr.contains(&log.display().to_string()), "{}", run.stderr);
    let third = worktree(&p, "refill-third");
    let run = run_in(&p, &third, &["--skip-generate"]).ok();
    assert!(!run.stderr.contains("refill of the spare clone failed"), "{}", run.stderr);
}

/// A function declared `SET track_counts = off` (a setting stored in the template, like a role's
/// or a database's) writes rows that no counter sees, for every session that calls it — a
/// `SECURITY DEFINER` one owned by a superuser, for any role. Such a template is never current.
#[test]
fn a_function_that_turns_row_counting_off_is_seen() {
    let (p, _held) = busy_project("atfunc");
    let t = p.template();
    sql(
        &t,
        "CREATE FUNCTION public.quiet_insert(int) RETURNS void LANGUAGE sql SECURITY DEFINER \
         SET track_counts = off AS 'INSERT INTO public.probe VALUES ($1)'",
    );
    let a = worktree(&p, "func-made");
    run_in(&p, &a, &["--skip-generate"]).ok();
    sql(&t, "SELECT public.quiet_insert(1)");
    let b = worktree(&p, "func-called");
    let run = run_in(&p, &b, &["--skip-generate"]).ok();
    assert!(has_probe(&env_db(&b), 1), "the clone misses the row the function wrote:\n{}", run.stderr);
    assert!(run.stderr.contains("not counted"), "{}", run.stderr);
}

/// The probe names PostgreSQL's own views: a schema early in the template's `search_path` with
/// look-alikes (a statistics view that never moves) cannot make a changed template look current.
#[test]
fn views_that_shadow_the_statistics_views_do_not_fool_the_probe() {
    let (p, _held) = busy_project("atshadow");
    let t = p.template();
    sql(
        &t,
        &format!(
            "CREATE SCHEMA shadow; \
             CREATE VIEW shadow.pg_stat_all_tables AS SELECT relid, 0::bigint AS n_tup_ins, 0::bigint AS n_tup_upd, \
               0::bigint AS n_tup_del FROM pg_catalog.pg_stat_all_tables; \
             ALTER DATABASE {t} SET search_path = shadow, pg_catalog, public"
        ),
    );
    let a = worktree(&p, "shadow-made");
    run_in(&p, &a, &["--skip-generate"]).ok();
    sql(&t, "INSERT INTO public.probe VALUES (1)");
    let b = worktree(&p, "shadow-after");
    let run = run_in(&p, &b, &["--skip-generate"]).ok();
    assert!(has_probe(&env_db(&b), 1), "the clone misses the row:\n{}", run.stderr);
}
