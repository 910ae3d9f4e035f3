//! What makes a copy of the template stale, and what does not (issue 23): sessions that read
//! and leave, a report running, a pool whose connections cycle, `pg_dump`, autovacuum's
//! `ANALYZE` are not changes; every kind of change made by a session that then leaves, or that
//! stays, is. Each test runs on a template in use (an idle session held on it), so `auto` goes
//! through the frozen copy, and reads the reason the run printed.

use std::process::Command;
use std::time::Duration;

use crate::attack::busy_project_with;
use crate::support::{password, sql, url_for, Project};
use crate::worktree::{env_db, run_in, wait_for, worktree, Held};

use xtask::pg::freshness::FLUSHED_AFTER;

/// A project whose template has an idle session held on it and a current frozen copy.
fn in_use(tag: &str) -> (Project, Held) {
    busy_project_with(tag, "CREATE TABLE public.probe (id int PRIMARY KEY); CREATE SEQUENCE public.counter")
}

/// The next worktree's run: its report.
fn next(p: &Project, name: &str) -> (std::path::PathBuf, String) {
    let wt = worktree(p, name);
    let run = run_in(p, &wt, &["--skip-generate"]).ok();
    (wt, run.stderr)
}

fn assert_current(stderr: &str) {
    assert!(stderr.contains("its frozen copy is current"), "the frozen copy was not taken as current:\n{stderr}");
}

fn assert_stale(stderr: &str) {
    assert!(stderr.contains("its frozen copy is stale"), "the frozen copy was taken as current:\n{stderr}");
}

/// A session that commits and leaves while the frozen copy is being made: the copy (its dump's
/// snapshot taken before the commit) misses the row, so its record must never be current.
#[test]
fn a_session_that_commits_and_leaves_mid_copy_makes_that_copy_never_current() {
    let (p, _held) = in_use("frmid");
    let t = p.template();
    sql(&t, "CREATE TABLE public.late (x int); INSERT INTO public.probe VALUES (1)");
    // The copy's pg_dump takes its snapshot, then waits for a lock held here.
    let mut locker = Held::open(&t);
    locker.run("BEGIN; LOCK TABLE public.probe IN ACCESS EXCLUSIVE MODE;");
    let probe = sql(&t, "SELECT 'public.probe'::regclass::oid");
    let waiting = |granted: bool| {
        sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE d.datname = '{t}' AND l.relation = {probe} AND l.granted = {granted}"),
        ) != "0"
    };
    wait_for("the lock", || waiting(true));
    let during = worktree(&p, "fr-mid-copy");
    let child = p
        .command(&during, &["db", "worktree", "--skip-generate"], &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the copy's pg_dump to wait for the lock", || waiting(false));
    // Commits after the dump's snapshot, and leaves.
    sql(&t, "INSERT INTO public.late VALUES (42)");
    locker.run("ROLLBACK;");
    drop(locker);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (wt, stderr) = next(&p, "fr-mid-after");
    assert_stale(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.late"), "1", "{stderr}");
}

#[test]
fn sessions_that_read_and_leave_are_not_changes() {
    let (p, _held) = in_use("frread");
    let t = p.template();
    // psql reads and leaves; a transaction rolled back; pg_dump reads everything and leaves;
    // ANALYZE (what autovacuum does to a template whose tables were just loaded) writes
    // statistics, not contents.
    sql(&t, "SELECT count(*) FROM public.probe, crm.organizations");
    sql(&t, "BEGIN; SELECT 1; ROLLBACK;");
    let url = url_for(&t).replacen(&format!(":{}@", password()), "@", 1);
    let dump = Command::new("pg_dump").args(["-d", &url, "-f", "/dev/null"]).env("PGPASSWORD", password()).status();
    assert!(dump.unwrap().success());
    sql(&t, "INSERT INTO public.probe SELECT generate_series(1, 500)");
    let (_, stderr) = next(&p, "fr-loaded");
    assert_stale(&stderr);
    sql(&t, "ANALYZE");
    let (wt, stderr) = next(&p, "fr-after-reads");
    assert_current(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe"), "500");
}

#[test]
fn every_kind_of_change_by_a_session_that_leaves_is_seen() {
    let (p, _held) = in_use("frchange");
    let t = p.template();
    // (what the session does, what the clone must show)
    let changes: [(&str, &str, &str); 7] = [
        ("SELECT nextval('public.counter')", "SELECT last_value FROM public.counter", "1"),
        ("SELECT setval('public.counter', 41, false)", "SELECT nextval('public.counter')", "41"),
        ("BEGIN; SELECT setval('public.counter', 77); ROLLBACK", "SELECT last_value FROM public.counter", "77"),
        ("INSERT INTO public.probe VALUES (1)", "SELECT count(*) FROM public.probe", "1"),
        ("CREATE TABLE public.made_since (x int)", "SELECT to_regclass('public.made_since') IS NOT NULL", "t"),
        ("SELECT lo_create(4242)", "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 4242", "1"),
        ("ALTER SEQUENCE public.counter RESTART WITH 900", "SELECT nextval('public.counter')", "900"),
    ];
    for (i, (change, check, expected)) in changes.iter().enumerate() {
        sql(&t, change);
        let (wt, stderr) = next(&p, &format!("fr-change-{i}"));
        assert_stale(&stderr);
        assert_eq!(&sql(&env_db(&wt), check), expected, "after `{change}`:\n{stderr}");
    }
}

#[test]
fn a_long_read_is_not_a_change_until_its_session_commits() {
    let (p, _held) = in_use("frlong");
    let t = p.template();
    // A report that began before the copy is made, and runs on through the next run; then the
    // same session commits a write.
    let mut report = Held::open(&t);
    report.run("SELECT pg_sleep(20);");
    let running = || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'active'"))
            == "1"
    };
    wait_for("the report to run", running);
    sql(&t, "INSERT INTO public.probe VALUES (1)");
    let (_, stderr) = next(&p, "fr-long-copy");
    assert_stale(&stderr);
    assert!(running(), "the report ended too early for this test");
    let (wt, stderr) = next(&p, "fr-long-during");
    assert!(running(), "the report ended too early for this test");
    assert_current(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe"), "1");
    report.run("INSERT INTO public.probe VALUES (2);");
    wait_for("the report's write", || sql(&t, "SELECT count(*) FROM public.probe WHERE id = 2") == "1");
    let (wt, stderr) = next(&p, "fr-long-after");
    assert_stale(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe WHERE id = 2"), "1");
}

#[test]
fn a_pool_s_new_connection_is_a_change_only_until_its_counts_are_published() {
    let (p, _held) = in_use("frpool");
    let t = p.template();
    // The pool replaces a connection: the new one connects and pings; so does another that
    // writes. Right away neither can be told from the other: stale.
    let mut reader = Held::open(&t);
    reader.run("SELECT 1;");
    let mut writer = Held::open(&t);
    writer.run("INSERT INTO public.probe VALUES (7);");
    wait_for("the write", || sql(&t, "SELECT count(*) FROM public.probe") == "1");
    let (wt, stderr) = next(&p, "fr-pool-young");
    assert_stale(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe"), "1");
    // Once they have been idle long enough for their counts to be published, the reader is no
    // change and the writer is one.
    reader.run("SELECT 2;");
    writer.run("INSERT INTO public.probe VALUES (8);");
    wait_for("the second write", || sql(&t, "SELECT count(*) FROM public.probe") == "2");
    std::thread::sleep(FLUSHED_AFTER + Duration::from_secs(1));
    let (wt, stderr) = next(&p, "fr-pool-writer");
    assert_stale(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe"), "2");
    reader.run("SELECT 3;");
    std::thread::sleep(FLUSHED_AFTER + Duration::from_secs(1));
    let (_, stderr) = next(&p, "fr-pool-reader");
    assert_current(&stderr);
}

/// One query message with several transactions in it (`psql -c "…; COMMIT; BEGIN; …"`, a
/// driver that sends `COMMIT; BEGIN` together): every transaction of the message starts at the
/// message's timestamp, so the second has the first's `xact_start` (and `state_change`: no
/// state is reported between them), and the first's row counts stay unpublished until the
/// session goes idle. Taken for "the same transaction", the copy made before the first committed
/// was current.
#[test]
fn a_commit_between_two_transactions_of_one_message_is_never_missed() {
    let (p, _held) = in_use("frmulti");
    let t = p.template();
    let url = url_for(&t).replacen(&format!(":{}@", password()), "@", 1);
    let mut message = Command::new("psql")
        .args(["-X", "-q", "-d", &url, "-c"])
        .arg("BEGIN; INSERT INTO public.probe VALUES (1); SELECT pg_sleep(8); COMMIT; BEGIN; SELECT pg_sleep(60);")
        .env("PGPASSWORD", password())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first transaction", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'active'"))
            == "1"
    });
    // The frozen copy is re-made while the first transaction is open (its row not in the copy):
    // a row written by a session that left makes it stale.
    sql(&t, "INSERT INTO public.probe VALUES (100)");
    let (_, stderr) = next(&p, "fr-multi-open");
    assert_stale(&stderr);
    assert_eq!(
        sql(&t, "SELECT count(*) FROM public.probe WHERE id = 1"),
        "0",
        "the first transaction ended too early for this test"
    );
    wait_for("the first transaction's commit", || sql(&t, "SELECT count(*) FROM public.probe") == "2");
    let (wt, stderr) = next(&p, "fr-multi-committed");
    let _ = message.kill();
    let _ = message.wait();
    assert_eq!(
        sql(&env_db(&wt), "SELECT count(*) FROM public.probe WHERE id = 1"),
        "1",
        "the clone misses the committed row:\n{stderr}"
    );
    assert_stale(&stderr);
}

/// Changes whose rows are not counted where they are: TRUNCATE deletes no counted row (the new
/// file is an update of `pg_class`), a materialized view refreshed swaps its file the same way, a
/// value added to an enum and a comment are rows of catalogs. Each by a session that leaves.
#[test]
fn changes_that_count_no_row_of_their_own_table_are_seen() {
    let (p, _held) = in_use("frtrunc");
    let t = p.template();
    sql(
        &t,
        "INSERT INTO public.probe SELECT generate_series(1, 10); \
         CREATE MATERIALIZED VIEW public.probe_count AS SELECT count(*) AS n FROM public.probe; \
         CREATE TYPE public.mood AS ENUM ('calm')",
    );
    let (_, stderr) = next(&p, "fr-trunc-setup");
    assert_stale(&stderr);
    let changes: [(&str, &str, &str); 4] = [
        ("TRUNCATE public.probe", "SELECT count(*) FROM public.probe", "0"),
        ("REFRESH MATERIALIZED VIEW public.probe_count", "SELECT n FROM public.probe_count", "0"),
        ("ALTER TYPE public.mood ADD VALUE 'tense'", "SELECT enum_range(NULL::public.mood)::text", "{calm,tense}"),
        ("COMMENT ON TABLE public.probe IS 'seen'", "SELECT obj_description('public.probe'::regclass)", "seen"),
    ];
    for (i, (change, check, expected)) in changes.iter().enumerate() {
        sql(&t, change);
        let (wt, stderr) = next(&p, &format!("fr-trunc-{i}"));
        assert_stale(&stderr);
        assert_eq!(&sql(&env_db(&wt), check), expected, "after `{change}`:\n{stderr}");
    }
}

/// Waits until the held session on `db` whose last statement was `query` is idle again.
fn wait_idle_after(db: &str, query: &str) {
    wait_for(query, || {
        sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND state = 'idle' AND query = '{}'",
                query.replace('\'', "''")
            ),
        ) == "1"
    });
}

/// A pool replaces a connection right before the run: the new one connects and pings. Its row
/// counts may not be published for 10 s, but a scan of the template's rows (one snapshot, every
/// relation counted, nothing written since the record's horizon) shows it changed nothing: the
/// copy is current at once, not 12 s later.
#[test]
fn a_pool_s_new_connection_that_only_pings_is_not_a_change_even_right_away() {
    let (p, _held) = in_use("frping");
    let t = p.template();
    let _reader = {
        let mut r = Held::open(&t);
        r.run("SELECT 2;");
        r
    };
    wait_idle_after(&t, "SELECT 2;");
    let (_, stderr) = next(&p, "fr-ping");
    assert_current(&stderr);
}

/// Every kind of change by a session that stays connected and idle (its counts unpublished):
/// the scan sees each — a row updated to the value it had (same count, a new row version), a
/// row deleted (one fewer), a large object, a comment, a TRUNCATE and a table made — and the
/// clone has it.
#[test]
fn every_kind_of_change_by_a_session_that_stays_is_seen_right_away() {
    let (p, _held) = in_use("frstay");
    let t = p.template();
    sql(&t, "INSERT INTO public.probe SELECT generate_series(1, 5)");
    let (_, stderr) = next(&p, "fr-stay-setup");
    assert_stale(&stderr);
    let mut stays = Held::open(&t);
    // (what the session does, what the clone must show)
    let changes: [(&str, &str, &str); 6] = [
        ("UPDATE public.probe SET id = id WHERE id = 1;", "SELECT count(*) FROM public.probe", "5"),
        ("DELETE FROM public.probe WHERE id = 2;", "SELECT count(*) FROM public.probe", "4"),
        ("SELECT lo_create(4343);", "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 4343", "1"),
        ("COMMENT ON TABLE public.probe IS 'stays';", "SELECT obj_description('public.probe'::regclass)", "stays"),
        ("TRUNCATE public.probe;", "SELECT count(*) FROM public.probe", "0"),
        ("CREATE TABLE public.made_by_stays (x int);", "SELECT to_regclass('public.made_by_stays') IS NOT NULL", "t"),
    ];
    for (i, (change, check, expected)) in changes.iter().enumerate() {
        stays.run(change);
        wait_idle_after(&t, change);
        let (wt, stderr) = next(&p, &format!("fr-stay-{i}"));
        assert_stale(&stderr);
        assert_eq!(&sql(&env_db(&wt), check), expected, "after `{change}`:\n{stderr}");
    }
}

/// A transaction open since before the copy was recorded updates a row (no row more or fewer)
/// and commits after it: its transaction id is below the ids assigned since, but not below the
/// record's horizon (the oldest transaction running when the rows were scanned), so its row
/// version is seen. A transaction that began since and has not committed is not a change yet.
#[test]
fn a_transaction_older_than_the_record_that_commits_after_it_is_seen() {
    let (p, _held) = in_use("frhorizon");
    let t = p.template();
    sql(&t, "INSERT INTO public.probe VALUES (1), (2)");
    let mut old = Held::open(&t);
    old.run("BEGIN; UPDATE public.probe SET id = 10 WHERE id = 1;");
    wait_for("the open transaction", || {
        sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'idle in transaction'"),
        ) == "1"
    });
    // The copy is re-made with that transaction open (its update not in it).
    let (_, stderr) = next(&p, "fr-horizon-open");
    assert_stale(&stderr);
    let (wt, stderr) = next(&p, "fr-horizon-still-open");
    assert_current(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe WHERE id = 10"), "0");
    // A transaction that began since and writes, uncommitted: not a change yet.
    let mut new = Held::open(&t);
    new.run("BEGIN; INSERT INTO public.probe VALUES (3);");
    wait_for("the new transaction", || {
        sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'idle in transaction'"),
        ) == "2"
    });
    let (wt, stderr) = next(&p, "fr-horizon-uncommitted");
    assert_current(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe WHERE id = 3"), "0");
    old.run("COMMIT;");
    wait_idle_after(&t, "COMMIT;");
    let (wt, stderr) = next(&p, "fr-horizon-committed");
    assert_stale(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe WHERE id = 10"), "1", "{stderr}");
    drop(new);
}

/// Statistics reset (`pg_stat_reset()`, or lost in a crash) leave the counters proving nothing:
/// the scan decides. Nothing changed: current; a row written by a session that left: stale.
#[test]
fn after_a_statistics_reset_the_rows_decide() {
    let (p, _held) = in_use("frreset");
    let t = p.template();
    sql(&t, "SELECT pg_stat_reset()");
    let (_, stderr) = next(&p, "fr-reset-nothing");
    assert_current(&stderr);
    sql(&t, "SELECT pg_stat_reset(); INSERT INTO public.probe VALUES (5)");
    let (wt, stderr) = next(&p, "fr-reset-written");
    assert_stale(&stderr);
    assert!(stderr.contains("statistics were reset"), "{stderr}");
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe"), "1");
}

/// A copy current only by a scan of its rows (a report began after it was recorded: the
/// counters cannot tell) is recorded again by the background refill, so that the next run's
/// check is the counters' alone; the new record still sees the next change.
#[test]
fn a_copy_current_only_by_a_scan_is_recorded_again_by_the_refill() {
    let (p, _held) = in_use("frrestamp");
    let t = p.template();
    let mut report = Held::open(&t);
    report.run("SELECT pg_sleep(60);");
    wait_for("the report to run", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'active'"))
            == "1"
    });
    let (_, stderr) = next(&p, "fr-restamp-scanned");
    assert_current(&stderr);
    assert!(stderr.contains("the counters could not tell"), "{stderr}");
    p.xtask(&["db", "refill-spare"]).ok();
    let (_, stderr) = next(&p, "fr-restamp-counted");
    assert_current(&stderr);
    assert!(!stderr.contains("could not tell"), "the record was not made again:\n{stderr}");
    sql(&t, "INSERT INTO public.probe VALUES (1)");
    let (wt, stderr) = next(&p, "fr-restamp-changed");
    assert_stale(&stderr);
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe"), "1");
}

/// A transaction held open elsewhere on the server (another database: snapshots are the whole
/// server's) keeps the horizon below rows committed before the copy was recorded. They are in
/// the recorded window, so a later scan does not take them for rows written since.
#[test]
fn rows_committed_before_the_record_above_its_horizon_are_not_changes() {
    let (p, _held) = in_use("frwindow");
    let t = p.template();
    let mut elsewhere = Held::open("postgres");
    elsewhere.run("BEGIN; SELECT pg_current_xact_id();");
    wait_for("the transaction elsewhere", || {
        sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'postgres' AND state = 'idle in transaction' AND backend_xid IS NOT NULL") != "0"
    });
    sql(&t, "INSERT INTO public.probe SELECT generate_series(1, 50)");
    let (_, stderr) = next(&p, "fr-window-written");
    assert_stale(&stderr);
    // A pool's new connection pings: the counters cannot tell, the rows decide.
    let mut ping = Held::open(&t);
    ping.run("SELECT 3;");
    wait_idle_after(&t, "SELECT 3;");
    let (wt, stderr) = next(&p, "fr-window-ping");
    assert_current(&stderr);
    assert!(stderr.contains("could not tell"), "{stderr}");
    assert_eq!(sql(&env_db(&wt), "SELECT count(*) FROM public.probe"), "50");
    elsewhere.run("ROLLBACK;");
}

/// The template's statistics reset right before the run: the counters prove nothing, so the
/// rows decide (the report must say a scan did).
fn next_by_rows(p: &Project, name: &str) -> (std::path::PathBuf, String) {
    sql(&p.template(), "SELECT pg_stat_reset()");
    let (wt, stderr) = next(p, name);
    assert!(stderr.contains("statistics were reset"), "the counters decided, not the rows:\n{stderr}");
    (wt, stderr)
}

/// Attack class: changes that leave every relation's row count as it was, or that live in
/// relations other than plain tables (an unlogged table, a partition written through its
/// partitioned parent, a table inheriting from another, a large object's pages), made while
/// a transaction held open elsewhere keeps the record's horizon below rows already committed
/// (so the recorded window is not empty and holds the very rows deleted). The counters are
/// reset after each, so only the scan can see it; the clone must have it.
#[test]
fn changes_that_keep_the_counts_or_live_outside_plain_tables_are_seen_by_the_rows() {
    let (p, _held) = in_use("frkeep");
    let t = p.template();
    let mut elsewhere = Held::open("postgres");
    elsewhere.run("BEGIN; SELECT pg_current_xact_id();");
    wait_for("the transaction elsewhere", || {
        sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = 'postgres' AND state = 'idle in transaction' AND backend_xid IS NOT NULL") != "0"
    });
    sql(
        &t,
        "INSERT INTO public.probe SELECT generate_series(1, 5); \
         CREATE UNLOGGED TABLE public.scratch (x int); \
         CREATE TABLE public.parted (x int) PARTITION BY RANGE (x); \
         CREATE TABLE public.parted_low PARTITION OF public.parted FOR VALUES FROM (0) TO (100); \
         CREATE TABLE public.base (x int); CREATE TABLE public.heir (y int) INHERITS (public.base); \
         SELECT lo_from_bytea(4545, 'abc')",
    );
    let (_, stderr) = next(&p, "fr-keep-setup");
    assert_stale(&stderr);
    let ids = "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.probe";
    // (what a session that leaves does, what the clone must show)
    let changes: [(&str, &str, &str); 6] = [
        // A row of the window deleted and another inserted: the same count.
        ("DELETE FROM public.probe WHERE id = 1; INSERT INTO public.probe VALUES (11)", ids, "2,3,4,5,11"),
        // Deleted and inserted again, identical, in one transaction, and an update inside a
        // savepoint released before the commit (a subtransaction's id).
        (
            "BEGIN; DELETE FROM public.probe WHERE id = 2; INSERT INTO public.probe VALUES (2); \
             SAVEPOINT s; UPDATE public.probe SET id = 12 WHERE id = 3; RELEASE s; COMMIT",
            ids,
            "2,4,5,11,12",
        ),
        ("INSERT INTO public.scratch VALUES (1)", "SELECT count(*) FROM public.scratch", "1"),
        ("INSERT INTO public.parted VALUES (7)", "SELECT count(*) FROM public.parted", "1"),
        ("INSERT INTO public.heir VALUES (8, 1)", "SELECT count(*) FROM public.base", "1"),
        ("SELECT lo_put(4545, 0, 'xyz')", "SELECT convert_from(lo_get(4545), 'UTF8')", "xyz"),
    ];
    for (i, (change, check, expected)) in changes.iter().enumerate() {
        sql(&t, change);
        let (wt, stderr) = next_by_rows(&p, &format!("fr-keep-{i}"));
        assert_stale(&stderr);
        assert_eq!(&sql(&env_db(&wt), check), expected, "after `{change}`:\n{stderr}");
    }
    elsewhere.run("ROLLBACK;");
}

/// Attack class: a transaction whose id was assigned before the record (so it is at or above
/// the horizon but its rows are in no recorded pair) deletes rows and inserts identical ones,
/// and updates a row inside a savepoint it releases, then commits while its session stays —
/// and a prepared transaction, open when the copy was recorded, committed later by `COMMIT
/// PREPARED`. Neither changes a count; both are seen by their row versions.
#[test]
fn transactions_open_at_the_record_that_commit_after_it_are_seen_by_the_rows() {
    let (p, _held) = in_use("fropen");
    let t = p.template();
    sql(&t, "INSERT INTO public.probe SELECT generate_series(1, 5)");
    let gid = format!("{t}_prepared");
    sql(&t, &format!("BEGIN; UPDATE public.probe SET id = 20 WHERE id = 1; PREPARE TRANSACTION '{gid}'"));
    let mut open = Held::open(&t);
    open.run("BEGIN; SELECT pg_current_xact_id();");
    wait_for("the open transaction", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'idle in transaction' AND backend_xid IS NOT NULL")) == "1"
    });
    // The copy is re-made (rows written by a session that left) with both transactions open.
    let (_, stderr) = next(&p, "fr-open-record");
    assert_stale(&stderr);
    let (_, stderr) = next_by_rows(&p, "fr-open-nothing");
    assert_current(&stderr);
    let commit = "DELETE FROM public.probe WHERE id = 2; INSERT INTO public.probe VALUES (2); \
                  SAVEPOINT s; UPDATE public.probe SET id = 30 WHERE id = 3; RELEASE s; COMMIT;";
    open.run(commit);
    // psql sends the statements one by one: the last is what the session shows.
    wait_idle_after(&t, "COMMIT;");
    let (wt, stderr) = next_by_rows(&p, "fr-open-committed");
    assert_stale(&stderr);
    let ids = "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.probe";
    assert_eq!(sql(&env_db(&wt), ids), "1,2,4,5,30", "{stderr}");
    sql(&t, &format!("COMMIT PREPARED '{gid}'"));
    let (wt, stderr) = next_by_rows(&p, "fr-open-prepared");
    assert_stale(&stderr);
    assert_eq!(sql(&env_db(&wt), ids), "2,4,5,20,30", "{stderr}");
}

/// Attack class: transaction ids gone round. A frozen row keeps its raw `xmin`, so on a server
/// past 2^32 ids (made here with `pg_resetwal --epoch 1` on a cluster of this test's own, the
/// next id set a few below a frozen row's) a transaction running when the copy is recorded can
/// share the row's low 32 bits: it deletes that row and writes one in its place, and the counts
/// and the window are the same again. The rows cannot tell there: the copy must be stale.
#[test]
fn after_the_transaction_ids_go_round_a_frozen_row_s_id_does_not_hide_a_change() {
    use xtask::pg::cluster::Throwaway;
    let server =
        Throwaway::start(&std::env::temp_dir(), "xtask-it-round", &["fsync = off", "autovacuum = off"]).unwrap();
    let url = server.cluster.url("postgres").unwrap();
    let pw = url.password().unwrap_or_default().to_string();
    let run = |db: &str, query: &str| -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &url.with_dbname(db).without_secrets(),
                "-c",
                query,
            ])
            .env("PGPASSWORD", &pw)
            .output()
            .unwrap();
        assert!(out.status.success(), "{query}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let p = Project::new("frround");
    std::fs::write(p.dir.join(".env"), format!("DATABASE_URL={}\n", url.with_dbname(&p.template()).expose_secret()))
        .unwrap();
    p.xtask(&["db", "template", "create"]).ok();
    let t = p.template();
    let x: u64 = run(&t, "BEGIN; CREATE TABLE public.probe (id int); INSERT INTO public.probe VALUES (1); SELECT pg_current_xact_id(); COMMIT;")
        .parse()
        .unwrap();
    for db in run("postgres", "SELECT string_agg(datname, ' ') FROM pg_database WHERE datallowconn").split(' ') {
        run(db, "VACUUM FREEZE");
    }
    server.cluster.stop().unwrap();
    let resetwal = xtask::pg::tools::server_bindir().unwrap().join("pg_resetwal");
    let data = server.cluster.data_dir();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let mut reset = if as_root { Command::new("runuser") } else { Command::new(&resetwal) };
    if as_root {
        reset.args(["-u", "postgres", "--"]).arg(&resetwal);
    }
    let next_id = (x - 2).to_string();
    let status = reset.args(["-e", "1", "-x", &next_id, "-D"]).arg(&data).status().unwrap();
    assert!(status.success());
    server.cluster.start().unwrap();
    // The next id is 2^32 + x - 2: two more, and a transaction holds x's low bits.
    run("postgres", "SELECT pg_current_xact_id()");
    run("postgres", "SELECT pg_current_xact_id()");
    struct Kept(std::process::Child);
    impl Drop for Kept {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut open = Kept(
        Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url.with_dbname(&t).without_secrets()])
            .env("PGPASSWORD", &pw)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut say = |statement: &str| {
        use std::io::Write;
        let stdin = open.0.stdin.as_mut().unwrap();
        stdin.write_all(format!("{statement}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    };
    say("BEGIN; SELECT pg_current_xact_id();");
    let open_xid = format!("SELECT coalesce(max(backend_xid::text), '') FROM pg_stat_activity WHERE datname = '{t}'");
    wait_for("the open transaction's id", || !run("postgres", &open_xid).is_empty());
    assert_eq!(
        run("postgres", &open_xid),
        x.to_string(),
        "the open transaction does not share the frozen row's low bits"
    );
    // One id after it completes, so that the record's snapshot ends above it.
    run("postgres", "SELECT pg_current_xact_id()");
    // The copy is recorded with that transaction open: the frozen row is in its window, under
    // the open transaction's low bits.
    let (_, stderr) = next(&p, "fr-round-record");
    assert!(stderr.contains("frozen copy"), "{stderr}");
    say("DELETE FROM public.probe WHERE id = 1; INSERT INTO public.probe VALUES (2); COMMIT;");
    wait_for("the commit", || {
        run(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND state = 'idle' AND query = 'COMMIT;'"
            ),
        ) == "1"
    });
    run(&t, "SELECT pg_stat_reset()");
    let (wt, stderr) = next(&p, "fr-round-changed");
    assert_stale(&stderr);
    let env = std::fs::read_to_string(wt.join(".env")).unwrap();
    let clone = env.lines().find_map(|l| l.strip_prefix("DATABASE_URL=")).unwrap();
    let clone = xtask::pg::url::PgUrl::parse(clone).unwrap();
    assert_eq!(run(clone.dbname().unwrap(), "SELECT string_agg(id::text, ',') FROM public.probe"), "2", "{stderr}");
    drop(open);
}
