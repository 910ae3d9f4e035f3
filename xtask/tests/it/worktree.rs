//! `db worktree` and `db worktrees` with real git worktrees on a real server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{git, password, sql, try_sql, url_for, Project, Run};

/// A project with its golden template built.
pub(crate) fn project(tag: &str) -> Project {
    let p = Project::new(tag);
    p.xtask(&["db", "template", "create"]).ok();
    p
}

/// A project with its golden template built and background refills of the spare clone on.
pub(crate) fn spare_project(tag: &str) -> Project {
    let p = Project::new(tag);
    let manifest = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    std::fs::write(p.dir.join("Cargo.toml"), manifest.replace("spare_clone = false", "spare_clone = true")).unwrap();
    git(&p.dir, &["commit", "-qam", "spares on"]);
    p.xtask(&["db", "template", "create"]).ok();
    p
}

/// A linked worktree of `p` on a new branch.
pub(crate) fn worktree(p: &Project, branch: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = p.dir.with_file_name(format!("{}-wt{n}", p.dir.file_name().unwrap().to_string_lossy()));
    git(&p.dir, &["worktree", "add", "-q", "-b", branch, dir.to_str().unwrap()]);
    dir
}

pub(crate) fn env_value(dir: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join(".env")).unwrap();
    let value = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in .env:\n{text}"));
    value.trim_matches(|c| c == '\'' || c == '"').to_string()
}

/// The database `.env` points at.
pub(crate) fn env_db(dir: &Path) -> String {
    env_value(dir, "DATABASE_URL").rsplit('/').next().unwrap().to_string()
}

pub(crate) fn run_in(p: &Project, dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["db", "worktree"];
    all.extend_from_slice(args);
    p.xtask_in(dir, &all, &[])
}

/// Row counts of every table, and the schema without volatile lines.
pub(crate) fn fingerprint(db: &str) -> (String, String) {
    // One count per table, in one query (no xpath: not every server is built with libxml).
    let tables = sql(
        db,
        "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables \
         WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    );
    let counts = if tables.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> =
            tables.lines().map(|t| format!("SELECT '{}=' || count(*) FROM {t}", t.replace('\'', "''"))).collect();
        sql(db, &format!("SELECT string_agg(x, ',' ORDER BY x) FROM ({}) q(x)", parts.join(" UNION ALL ")))
    };
    let url = url_for(db).replacen(&format!(":{}@", password()), "@", 1);
    let out = Command::new("pg_dump")
        .args(["-s", "--no-owner", "--no-privileges", "-d", &url])
        .env("PGPASSWORD", password())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let schema = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict") && !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    (counts, schema)
}

/// An open session on `db` that runs statements on demand and stays connected.
pub(crate) struct Held(Child);
impl Held {
    pub(crate) fn open(db: &str) -> Held {
        let url = url_for(db).replacen(&format!(":{}@", password()), "@", 1);
        let child = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url])
            .env("PGPASSWORD", password())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut held = Held(child);
        held.run("SELECT 1;");
        held
    }
    /// Sends `statement` to the held session; it runs asynchronously, so callers wait for its
    /// effect with [`wait_for`].
    pub(crate) fn run(&mut self, statement: &str) {
        let stdin = self.0.stdin.as_mut().unwrap();
        stdin.write_all(statement.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }
}
impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_clone_equals_the_template_and_env_points_at_it() {
    let p = project("wteq");
    std::fs::write(
        p.dir.join(".env"),
        format!(
            "# main settings\nAPP_HOST=https://me.example.test # tunnel\nDATABASE_URL='{}'\nPORT=4100\nEXTRA=kept\n",
            url_for(&p.template())
        ),
    )
    .unwrap();
    let wt = worktree(&p, "feature/equal");
    let run = run_in(&p, &wt, &[]).ok();
    assert!(run.stderr.contains("no one is connected to the template"), "{}", run.stderr);
    let db = env_db(&wt);
    assert!(db.starts_with(&format!("{}feature_equal_", p.prefix)), "{db}");
    assert_eq!(fingerprint(&db), fingerprint(&p.template()), "same schema and row counts");
    assert_eq!(
        sql(&db, "SELECT string_agg(version::text || checksum::text, ',' ORDER BY version) FROM _sqlx_migrations"),
        sql(
            &p.template(),
            "SELECT string_agg(version::text || checksum::text, ',' ORDER BY version) FROM _sqlx_migrations"
        )
    );

    // The copied .env keeps everything but DATABASE_URL and PORT, in order, with its quoting.
    let text = std::fs::read_to_string(wt.join(".env")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# main settings");
    assert_eq!(lines[1], "APP_HOST=https://me.example.test # tunnel");
    assert!(lines[2].starts_with("DATABASE_URL='postgres") && lines[2].ends_with(&format!("/{db}'")), "{}", lines[2]);
    assert_eq!(lines[4], "EXTRA=kept");
    assert_ne!(env_value(&wt, "PORT"), "4100", "the main worktree's port is taken");
    assert!(!run.all().contains(&password()), "the password was printed");
}

#[test]
fn a_second_run_keeps_the_database_and_its_rows() {
    let p = project("wtidem");
    let wt = worktree(&p, "idem");
    run_in(&p, &wt, &[]).ok();
    let db = env_db(&wt);
    let port = env_value(&wt, "PORT");
    sql(&db, "INSERT INTO crm.organizations (name, slug) VALUES ('Branch only', 'branch-only')");
    let again = run_in(&p, &wt, &[]).ok();
    assert!(again.stderr.contains("exists: kept as it is"), "{}", again.stderr);
    assert_eq!(sql(&db, "SELECT count(*) FROM crm.organizations WHERE slug = 'branch-only'"), "1");
    assert_eq!(env_value(&wt, "PORT"), port, "the port is stable");
}

#[test]
fn auto_clones_a_template_in_use_and_sees_its_latest_commit() {
    let p = project("wtbusy");
    let t = p.template();
    let mut held = Held::open(&t);
    held.run("INSERT INTO crm.organizations (name, slug) VALUES ('Just committed', 'just-committed');");
    wait_for("the commit", || sql(&t, "SELECT count(*) FROM crm.organizations WHERE slug = 'just-committed'") == "1");

    let wt1 = worktree(&p, "busy-one");
    let run = run_in(&p, &wt1, &[]).ok();
    assert!(run.stderr.contains("open connection"), "{}", run.stderr);
    assert_eq!(sql(&env_db(&wt1), "SELECT count(*) FROM crm.organizations WHERE slug = 'just-committed'"), "1");

    // Nothing changed since: the second clone comes from the frozen copy without a refresh.
    let wt2 = worktree(&p, "busy-two");
    let run = run_in(&p, &wt2, &[]).ok();
    assert!(run.stderr.contains("frozen copy is current"), "{}", run.stderr);
    assert_eq!(sql(&env_db(&wt2), "SELECT count(*) FROM crm.organizations WHERE slug = 'just-committed'"), "1");

    // A commit on the held connection (still open, idle since) must reach the next clone;
    // so must a sequence that only advanced.
    held.run("INSERT INTO crm.organizations (name, slug) VALUES ('Later', 'later');");
    wait_for("the second commit", || sql(&t, "SELECT count(*) FROM crm.organizations WHERE slug = 'later'") == "1");
    let wt3 = worktree(&p, "busy-three");
    let run = run_in(&p, &wt3, &[]).ok();
    assert!(run.stderr.contains("stale"), "{}", run.stderr);
    assert_eq!(sql(&env_db(&wt3), "SELECT count(*) FROM crm.organizations WHERE slug = 'later'"), "1");

    held.run("SELECT setval('crm.conversation_reference_seq', 987654);");
    wait_for("setval", || sql(&t, "SELECT last_value FROM crm.conversation_reference_seq") == "987654");
    let wt4 = worktree(&p, "busy-four");
    run_in(&p, &wt4, &[]).ok();
    assert_eq!(sql(&env_db(&wt4), "SELECT last_value FROM crm.conversation_reference_seq"), "987654");

    // The connection was never broken.
    held.run("INSERT INTO crm.organizations (name, slug) VALUES ('Still here', 'still-here');");
    wait_for("the held session to still work", || {
        sql(&t, "SELECT count(*) FROM crm.organizations WHERE slug = 'still-here'") == "1"
    });
    // The template strategy refuses while the template is in use.
    let wt5 = worktree(&p, "busy-five");
    let run = run_in(&p, &wt5, &["--strategy", "template"]);
    assert_ne!(run.code, 0);
    assert!(!p.databases().iter().any(|d| d.contains("busy_five")), "{:?}", p.databases());
}

/// A template that pg_dump can dump but psql cannot restore: a CHECK that reads another table,
/// which is still empty when the first table's rows arrive.
fn poison(db: &str) {
    sql(db, "CREATE TABLE public.zz_b (id int); INSERT INTO public.zz_b VALUES (1); \
             CREATE FUNCTION public.zz_b_has(x int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT EXISTS (SELECT 1 FROM public.zz_b WHERE id = x)'; \
             CREATE TABLE public.aa_a (x int CHECK (public.zz_b_has(x))); INSERT INTO public.aa_a VALUES (1);");
}

#[test]
fn a_failed_clone_leaves_no_database() {
    let p = project("wtfail");
    poison(&p.template());
    let wt = worktree(&p, "poisoned");
    let before = p.databases();
    let run = run_in(&p, &wt, &["--strategy", "dump"]).fails(2, "pg_dump | psql");
    assert!(run.stderr.contains("aa_a") || run.stderr.contains("zz_b_has"), "{}", run.stderr);
    assert_eq!(p.databases(), before, "no database left behind");
    assert!(!wt.join(".env").exists(), ".env untouched");

    // auto, template in use: the frozen-copy refresh fails the same way, and cleans up the same way.
    let _held = Held::open(&p.template());
    wait_for("the held connection", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'", p.template())) != "0"
    });
    run_in(&p, &wt, &[]).fails(2, "pg_dump | psql");
    assert_eq!(p.databases(), before, "no database left behind");
}

#[test]
fn a_killed_clone_leaves_no_database() {
    let p = project("wtkill");
    // Big enough that the dump takes a moment.
    sql(
        &p.template(),
        "CREATE TABLE public.bulk AS SELECT g AS id, md5(g::text) AS t FROM generate_series(1, 600000) g",
    );
    let before = p.databases();
    for (i, signal) in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL].into_iter().enumerate() {
        let wt = worktree(&p, &format!("killed-{i}"));
        let child =
            p.command(&wt, &["db", "worktree", "--strategy", "dump"], &[]).stderr(Stdio::piped()).spawn().unwrap();
        wait_for("the clone to start", || p.databases().len() > before.len());
        std::thread::sleep(Duration::from_millis(150));
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if signal == libc::SIGKILL {
            // Nothing can clean up after SIGKILL in-process: the next run does.
            wait_for("the killed psql to go", || try_sql("postgres", "SELECT 1").is_ok());
            let list = p.xtask_in(&wt, &["db", "worktrees"], &[]).ok();
            assert!(list.stderr.contains("left unfinished by an interrupted run"), "{}", list.stderr);
        } else {
            assert_eq!(out.status.code(), Some(128 + signal), "{stderr}");
        }
        assert_eq!(p.databases(), before, "after signal {signal}: {stderr}");
        assert!(!wt.join(".env").exists());
    }
}

#[test]
fn odd_branch_names_get_distinct_valid_databases() {
    let p = project("wtodd");
    let long = format!("feature/{}", "x".repeat(110));
    let branches = ["feature/a-b", "feature/a_b", "Release/2.0.1", "ünïcödé/naïve", "it's-\"quoted\"", long.as_str()];
    let mut names = Vec::new();
    for b in branches {
        let wt = worktree(&p, b);
        run_in(&p, &wt, &["--skip-migrate", "--skip-generate"]).ok();
        let db = env_db(&wt);
        assert!(db.len() <= 63 && db.starts_with(&p.prefix), "{b} → {db}");
        assert_eq!(sql(&db, "SELECT current_database()"), db);
        names.push(db);
    }
    // --name with spaces and SQL in it.
    let wt = worktree(&p, "named");
    for name in ["my feature", "x'; DROP DATABASE postgres; --", "\"quoted\" name"] {
        run_in(&p, &wt, &["--name", name, "--skip-migrate"]).ok();
        names.push(env_db(&wt));
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert_eq!(sql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'postgres'"), "1");
}

#[test]
fn ports_differ_between_worktrees() {
    let p = project("wtport");
    let a = worktree(&p, "port-a");
    let b = worktree(&p, "port-b");
    run_in(&p, &a, &[]).ok();
    run_in(&p, &b, &[]).ok();
    assert_ne!(env_value(&a, "PORT"), env_value(&b, "PORT"));
    assert_ne!(env_db(&a), env_db(&b));
}

#[test]
fn prune_drops_exactly_the_orphans() {
    let p = project("wtprune");
    let keep = worktree(&p, "keep");
    let gone = worktree(&p, "gone");
    run_in(&p, &keep, &[]).ok();
    run_in(&p, &gone, &[]).ok();
    let (keep_db, gone_db) = (env_db(&keep), env_db(&gone));
    // Also: a frozen copy (template in use), and a database with our prefix we did not create.
    let held = Held::open(&p.template());
    wait_for("the held connection", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'", p.template())) != "0"
    });
    let frozen_wt = worktree(&p, "frozen-maker");
    run_in(&p, &frozen_wt, &[]).ok();
    drop(held);
    let foreign = format!("{}not_ours", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {foreign}"));
    git(&p.dir, &["worktree", "remove", "--force", gone.to_str().unwrap()]);

    let list = p.xtask(&["db", "worktrees"]).ok();
    assert!(list.stdout.contains(&gone_db) && list.stdout.contains("gone"), "{}", list.stdout);
    let json: serde_json::Value = serde_json::from_str(&p.xtask(&["db", "worktrees", "--json"]).ok().stdout).unwrap();
    let orphans: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["worktree_exists"] == false)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(orphans, vec![gone_db.as_str()]);

    let before = p.databases();
    p.xtask(&["db", "worktrees", "--prune"]).fails(2, "pass -y");
    assert_eq!(p.databases(), before, "nothing dropped without confirmation");
    p.xtask(&["db", "worktrees", "--prune", "-y"]).ok();
    let after = p.databases();
    let expected: Vec<String> = before.into_iter().filter(|d| *d != gone_db).collect();
    assert_eq!(after, expected);
    assert!(after.contains(&keep_db) && after.contains(&foreign) && after.contains(&p.template()));
    assert!(after.iter().any(|d| d.contains("frozen")), "{after:?}");
}

#[test]
fn skip_flags_migrate_generate_and_edited_migrations() {
    let p = Project::new("wtsteps");
    // Generators see DATABASE_URL and PORT.
    let manifest = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    std::fs::write(p.dir.join("Cargo.toml"), format!("{manifest}generate_commands = [[\"sh\", \"-c\", \"echo \\\"$PORT ${{DATABASE_URL##*/}}\\\" > generated.txt\"]]\n")).unwrap();
    git(&p.dir, &["commit", "-qam", "generator"]);
    p.xtask(&["db", "template", "create"]).ok();
    // Make the template one migration behind the branch: undo migration 10 in it.
    let t = p.template();
    sql(
        &t,
        "DROP TABLE crm.customer_tags, crm.tags, crm.notes CASCADE; DELETE FROM _sqlx_migrations WHERE version = 10",
    );
    let wt = worktree(&p, "steps");
    // A template behind by more than `template_max_behind` gets a warning with the way out.
    let behind = worktree(&p, "behind");
    let run = p.xtask_in(&behind, &["db", "--set", "template_max_behind=0", "worktree", "--skip-generate"], &[]).ok();
    assert!(
        run.stderr.contains("is 1 migrations behind") && run.stderr.contains("cargo xtask db migrate"),
        "{}",
        run.stderr
    );

    let run = run_in(&p, &wt, &["--skip-migrate", "--skip-generate"]).ok();
    assert!(run.stderr.contains("skipped (--skip-migrate)"), "{}", run.stderr);
    let db = env_db(&wt);
    assert_eq!(sql(&db, "SELECT count(*) FROM _sqlx_migrations WHERE version = 10"), "0");
    assert!(!wt.join("generated.txt").exists());

    let run = run_in(&p, &wt, &[]).ok();
    assert!(run.stderr.contains("1 applied"), "{}", run.stderr);
    assert_eq!(sql(&db, "SELECT count(*) FROM _sqlx_migrations WHERE version = 10"), "1");
    assert_eq!(sql(&db, "SELECT to_regclass('crm.notes') IS NOT NULL"), "t");
    // Generators run on a database built fresh from every migration, with this worktree's PORT.
    let generated = std::fs::read_to_string(wt.join("generated.txt")).unwrap();
    let (port, fresh) = generated.trim().split_once(' ').unwrap();
    assert_eq!(port, env_value(&wt, "PORT"));
    assert!(fresh.starts_with(&p.prefix), "{generated}");
    assert!(wt.join("docs/schema.sql").is_file() && wt.join("docs/database.md").is_file());

    // A migration the migrator does not know (a binary embeds its migrations at build time): named.
    std::fs::write(wt.join("migrations/0099_branch_only.sql"), "CREATE TABLE crm.branch_only (id int);\n").unwrap();
    let embedded = format!("migrate_command=[\"{}\", \"migrate\"]", crate::support::app_bin().display());
    p.xtask_in(&wt, &["db", "--set", &embedded, "worktree"], &[])
        .fails(2, "migration(s) 99 of this checkout are still not applied");
    // The project's migrator reads them at run time: applied.
    run_in(&p, &wt, &["--skip-generate"]).ok();
    assert_eq!(sql(&db, "SELECT to_regclass('crm.branch_only') IS NOT NULL"), "t");

    // A migration edited after the template applied it: the error names the file.
    let other = worktree(&p, "edited");
    let file = std::fs::read_dir(other.join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.to_string_lossy().contains("0002_"))
        .unwrap();
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap() + "\n-- edited\n").unwrap();
    run_in(&p, &other, &[]).fails(2, &file.file_name().unwrap().to_string_lossy());
    // ... and --skip-migrate still gives a database.
    run_in(&p, &other, &["--skip-migrate"]).ok();
}

#[test]
fn refusals() {
    let p = project("wtrefuse");
    // The main worktree's database is the template itself.
    run_in(&p, &p.dir, &[]).fails(2, "main worktree");
    // Detached HEAD.
    let wt = worktree(&p, "detach");
    git(&wt, &["checkout", "-q", "--detach"]);
    run_in(&p, &wt, &[]).fails(2, "--name");
    run_in(&p, &wt, &["--name", "detached-ok"]).ok();
    // No template.
    let q = Project::new("wtnotpl");
    let wt = worktree(&q, "x");
    run_in(&q, &wt, &[]).fails(2, "WORKTREE_TEMPLATE_DB");
    // --drop asks, refuses without a terminal, drops with -y.
    let wt = worktree(&p, "dropme");
    run_in(&p, &wt, &[]).ok();
    let db = env_db(&wt);
    run_in(&p, &wt, &["--drop"]).fails(2, "pass -y");
    run_in(&p, &wt, &["--drop", "-y"]).ok();
    assert!(!p.databases().contains(&db));
}

#[test]
fn pg_dump_older_than_the_server_is_named() {
    let p = project("wtolddump");
    let bindir = p.dir.join("pgbin");
    std::fs::create_dir_all(&bindir).unwrap();
    let psql =
        Command::new("sh").args(["-c", "command -v psql || echo /usr/lib/postgresql/15/bin/psql"]).output().unwrap();
    std::os::unix::fs::symlink(String::from_utf8_lossy(&psql.stdout).trim(), bindir.join("psql")).unwrap();
    let fake = bindir.join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let wt = worktree(&p, "olddump");
    let before = p.databases();
    p.xtask_in(&wt, &["db", "worktree", "--strategy", "dump"], &[("XTASK_PG_BINDIR", bindir.to_str().unwrap())])
        .fails(2, "older than the server");
    assert_eq!(p.databases(), before);
}

#[test]
fn a_spare_clone_is_taken_when_current_and_never_when_stale() {
    let p = spare_project("wtspare");
    let t = p.template();

    let a = worktree(&p, "spare-a");
    run_in(&p, &a, &["--skip-generate"]).ok();
    wait_for("the background refill", || spare_ready(&p));
    // Autovacuum (each second on the test server) has visited the new template by now; it must
    // have found nothing to do there (`template create` vacuums and analyzes): a worker that came
    // and went would make the spare stale.
    std::thread::sleep(Duration::from_secs(4));

    let b = worktree(&p, "spare-b");
    let run = run_in(&p, &b, &["--skip-generate"]).ok();
    assert!(run.stderr.contains("ready-made spare clone"), "{}", run.stderr);
    assert_eq!(fingerprint(&env_db(&b)), fingerprint(&t), "the spare is a full clone of the template");
    assert_eq!(sql(&env_db(&b), "SELECT datallowconn FROM pg_database WHERE datname = current_database()"), "t");
    wait_for("the next refill", || spare_ready(&p));

    // A change committed to the template makes the spare stale: it must not be used.
    sql(&t, "INSERT INTO crm.organizations (name, slug) VALUES ('After the spare', 'after-spare')");
    let c = worktree(&p, "spare-c");
    let run = run_in(&p, &c, &["--skip-generate"]).ok();
    assert!(run.stderr.contains("spare clone is stale"), "{}", run.stderr);
    assert_eq!(sql(&env_db(&c), "SELECT count(*) FROM crm.organizations WHERE slug = 'after-spare'"), "1");
    wait_for("the refill after a stale spare", || spare_ready(&p));

    // The spare is nobody's branch: never listed, never pruned.
    let spare = sql("postgres", &format!("SELECT datname FROM pg_database WHERE shobj_description(oid, 'pg_database') LIKE '%\"kind\":\"spare\"%' AND starts_with(datname, '{}')", p.prefix));
    let list = p.xtask(&["db", "worktrees", "--json"]).ok();
    assert!(!spare.is_empty() && !list.stdout.contains(&spare), "{spare}: {}", list.stdout);
    p.xtask(&["db", "worktrees", "--prune", "-y"]).ok();
    assert!(p.databases().contains(&spare));
}

/// The background refill is done: one spare clone of `p`'s template, and no copy in progress.
fn spare_ready(p: &Project) -> bool {
    sql("postgres", &format!("SELECT count(*) FROM pg_database WHERE starts_with(datname, '{}spare_') AND shobj_description(oid, 'pg_database') LIKE '%\"kind\":\"spare\"%'", p.prefix)) == "1"
        && !p.databases().iter().any(|d| d.contains("_tmp_"))
}

/// Every row of `db`'s tables and every sequence's state, as `pg_dump --data-only` writes
/// them, sorted (a table's rows come in whatever order its file holds them).
fn data_lines(db: &str) -> Vec<String> {
    let url = url_for(db).replacen(&format!(":{}@", password()), "@", 1);
    let out = Command::new("pg_dump")
        .args(["--data-only", "--no-comments", "-d", &url])
        .env("PGPASSWORD", password())
        // pg_dump writes dates ISO and floats exactly, but in the session's time zone and string
        // syntax, which a database's own settings choose: the same ones for both sides.
        .env("PGTZ", "UTC")
        .env("PGOPTIONS", "-c standard_conforming_strings=on")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            !l.is_empty() && !l.starts_with("--") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict")
                // Rows and sequences, not pg_dump's own session settings (the database's follow).
                && !l.starts_with("SET ") && !l.starts_with("SELECT pg_catalog.set_config(")
        })
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// `a` and `b` hold the same data ([`data_lines`]); when not, the lines only one side has.
#[track_caller]
fn assert_same_data(a: &str, b: &str, what: &str) {
    let (x, y) = (data_lines(a), data_lines(b));
    if x != y {
        let only =
            |p: &[String], q: &[String]| p.iter().filter(|l| !q.contains(l)).take(20).cloned().collect::<Vec<_>>();
        panic!("{what}: only in {a}: {:#?}\nonly in {b}: {:#?}", only(&x, &y), only(&y, &x));
    }
}

/// A template in use whose rows were written since the spare clone was made: the spare is taken
/// and only the tables written since are copied over from the template — each kind of table
/// (one other tables reference, one with a generated column and an identity, a partition, an
/// inheriting table, one a trigger writes), every sequence — and the result is the template's
/// data exactly (no trigger fired again, no cascade). What rows cannot carry (a table with
/// rules, DDL, a large object) is dumped instead, and the clone has it.
#[test]
fn a_stale_spare_takes_only_the_rows_written_since_and_equals_the_template() {
    let p = spare_project("wtpatch");
    let t = p.template();
    sql(
        &t,
        "CREATE TABLE public.parent (id int PRIMARY KEY, name text); \
         CREATE TABLE public.audit (n int); \
         CREATE TABLE public.child (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
           parent_id int REFERENCES public.parent ON DELETE CASCADE, n int, doubled int GENERATED ALWAYS AS (n * 2) STORED); \
         CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO public.audit VALUES (NEW.n); RETURN NEW; END$$; \
         CREATE TRIGGER audited AFTER INSERT ON public.child FOR EACH ROW EXECUTE FUNCTION public.audit(); \
         CREATE TABLE public.parted (x int) PARTITION BY RANGE (x); \
         CREATE TABLE public.parted_low PARTITION OF public.parted FOR VALUES FROM (0) TO (100); \
         CREATE TABLE public.base (x int); CREATE TABLE public.heir (y int) INHERITS (public.base); \
         CREATE TABLE public.ruled (x int); CREATE RULE kept AS ON DELETE TO public.ruled DO INSTEAD NOTHING; \
         CREATE SEQUENCE public.counter; CREATE SCHEMA \"Odd; \"\"schema\"\"\"; \
         CREATE TABLE \"Odd; \"\"schema\"\"\".\"t'a\\b\" (\"c \"\"1\"\"\" text, \"\\.\" int); \
         INSERT INTO public.parent SELECT g, 'p' || g FROM generate_series(1, 50) g; \
         INSERT INTO public.child (parent_id, n) SELECT 1 + g % 50, g FROM generate_series(1, 500) g; \
         CREATE TABLE public.measures (d date, f float8, ts timestamp, tz timestamptz, i interval); \
         INSERT INTO public.measures VALUES ('2020-03-04', 0.1, '2020-03-04 05:06:07', '2020-03-04 05:06:07+00', '1 day'); \
         CREATE TABLE public.always (x int); \
         CREATE FUNCTION public.count_always() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO public.audit VALUES (-1); RETURN NEW; END$$; \
         CREATE TRIGGER counted AFTER INSERT ON public.always FOR EACH ROW EXECUTE FUNCTION public.count_always(); \
         ALTER TABLE public.always ENABLE ALWAYS TRIGGER counted",
    );
    sql(&t, "VACUUM ANALYZE");
    // The template's own settings write text the copy's side would read otherwise: day first,
    // floats rounded, another time zone; and `'\.'` read as `.` (no end-of-data line).
    sql(
        "postgres",
        &format!(
            "ALTER DATABASE \"{t}\" SET DateStyle = 'SQL, DMY'; ALTER DATABASE \"{t}\" SET extra_float_digits = -3; \
             ALTER DATABASE \"{t}\" SET TimeZone = 'Asia/Kathmandu'; ALTER DATABASE \"{t}\" SET IntervalStyle = 'sql_standard'; \
             ALTER DATABASE \"{t}\" SET standard_conforming_strings = off"
        ),
    );
    let _held = Held::open(&t);
    let a = worktree(&p, "patch-a");
    run_in(&p, &a, &["--skip-generate"]).ok();
    wait_for("the background refill", || spare_ready(&p));

    // Rows only, by sessions that leave: the spare is brought up to date.
    sql(
        &t,
        "UPDATE public.parent SET name = 'renamed' WHERE id = 7; \
         DELETE FROM public.child WHERE id <= 3; \
         INSERT INTO public.child (parent_id, n) VALUES (2, 1000); \
         INSERT INTO public.parted VALUES (5); INSERT INTO public.heir VALUES (1, 2); \
         INSERT INTO \"Odd; \"\"schema\"\"\".\"t'a\\b\" VALUES (E'\\\\.\\n\\\\.', 1); \
         INSERT INTO public.measures VALUES ('2021-02-01', 0.123456789012345678, '2021-02-01 23:59:58.123456', \
           '2021-02-01 23:59:58.123456+00', '-1 day +02:03:04.5'); \
         SELECT nextval('public.counter'); SELECT setval('public.counter', 30, false)",
    );
    let b = worktree(&p, "patch-b");
    let run = run_in(&p, &b, &["--skip-generate"]).ok();
    assert!(run.stderr.contains("rows of the tables written since copied over"), "{}", run.stderr);
    assert!(!run.stderr.contains("but the spare clone could not"), "{}", run.stderr);
    assert_same_data(&env_db(&b), &t, "the patched spare holds the template's data exactly");
    assert_eq!(sql(&env_db(&b), "SELECT count(*) FROM public.audit"), "501", "no trigger fired again");
    wait_for("the refill after a patch", || spare_ready(&p));

    // What rows cannot carry: a dump instead, which has it.
    let refusals: [(&str, &str, &str, &str); 5] = [
        (
            "INSERT INTO public.always VALUES (1)",
            "public.always changed since, and a trigger on it is enabled ALWAYS or REPLICA",
            "SELECT count(*) FROM public.audit WHERE n = -1",
            "1",
        ),
        (
            "INSERT INTO public.ruled VALUES (1)",
            "public.ruled changed since, and it is a materialized view or has rules",
            "SELECT count(*) FROM public.ruled",
            "1",
        ),
        (
            "CREATE TABLE public.made (x int)",
            "relations were made or dropped since",
            "SELECT to_regclass('public.made') IS NOT NULL",
            "t",
        ),
        (
            "COMMENT ON TABLE public.parent IS 'parents'",
            "its catalog pg_description changed since",
            "SELECT obj_description('public.parent'::regclass)",
            "parents",
        ),
        (
            "SELECT lo_from_bytea(4646, 'abc')",
            "its catalog pg_largeobject",
            "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 4646",
            "1",
        ),
    ];
    for (i, (change, why, check, expected)) in refusals.iter().enumerate() {
        sql(&t, change);
        let wt = worktree(&p, &format!("patch-refused-{i}"));
        let run = run_in(&p, &wt, &["--skip-generate"]).ok();
        assert!(
            run.stderr.contains(&format!("the spare clone could not be brought up to date: {why}")),
            "{}",
            run.stderr
        );
        assert_eq!(&sql(&env_db(&wt), check), expected, "after `{change}`:\n{}", run.stderr);
        assert_same_data(&env_db(&wt), &t, change);
        wait_for("the refill", || spare_ready(&p));
    }
}

/// The background refill starts 1.5 s after the run, in the worktree just made: a script that
/// removes that worktree at once must not make it fail (it used to, on the vanished current
/// directory, and the next run warned about it).
#[test]
fn a_worktree_removed_at_once_does_not_fail_the_refill() {
    let p = spare_project("wtgone");
    let a = worktree(&p, "gone-a");
    run_in(&p, &a, &["--skip-generate"]).ok();
    git(&p.dir, &["worktree", "remove", "--force", a.to_str().unwrap()]);
    wait_for("the refill", || spare_ready(&p));
    let b = worktree(&p, "gone-b");
    let run = run_in(&p, &b, &["--skip-generate"]).ok();
    assert!(!run.stderr.contains("background refill of the spare clone failed"), "{}", run.stderr);
    assert!(run.stderr.contains("ready-made spare clone"), "{}", run.stderr);
}

/// Interrupted while it copies the rows written since into the spare it took (SIGINT, SIGTERM):
/// the run ends with the signal's status, and neither the half-patched spare nor anything
/// named for the branch is left; the next run clones the template's rows.
#[test]
fn an_interrupted_patch_leaves_no_database() {
    let p = spare_project("wtpatchkill");
    let t = p.template();
    sql(&t, "CREATE TABLE public.bulk AS SELECT g AS id, md5(g::text) AS t FROM generate_series(1, 600000) g");
    let _held = Held::open(&t);
    let a = worktree(&p, "patchkill-a");
    run_in(&p, &a, &["--skip-generate"]).ok();
    for (i, signal) in [libc::SIGINT, libc::SIGTERM].into_iter().enumerate() {
        wait_for("the background refill", || spare_ready(&p));
        let before: Vec<String> = p.databases().into_iter().filter(|d| !d.contains("spare_")).collect();
        sql(&t, &format!("UPDATE public.bulk SET t = 'round {i}'"));
        let wt = worktree(&p, &format!("patchkill-{i}"));
        let child = p.command(&wt, &["db", "worktree", "--skip-generate"], &[]).stderr(Stdio::piped()).spawn().unwrap();
        wait_for("the rows being copied over", || {
            sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT %public.bulk%'")
                != "0"
        });
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + signal), "{stderr}");
        assert!(stderr.contains("rows of the tables written since copied over"), "{stderr}");
        wait_for("our sessions to go", || {
            sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT %public.bulk%'")
                == "0"
        });
        assert_eq!(p.databases(), before, "after signal {signal}: {stderr}");
        assert!(!wt.join(".env").exists());
        // The next run has the template's rows (and its refill makes a spare again).
        let run = run_in(&p, &wt, &["--skip-generate"]).ok();
        assert_eq!(
            sql(&env_db(&wt), &format!("SELECT count(*) FROM public.bulk WHERE t = 'round {i}'")),
            "600000",
            "{}",
            run.stderr
        );
    }
}

/// `db worktree BRANCH` from the main worktree starts its look at the template while it checks
/// the worktree out. Its sessions are gone before the plan counts who is connected (nobody on the
/// template: a direct copy), and when a session on the template ran a statement a moment ago,
/// the scan that look made decides (the spare is taken). Nothing of ours stays on the template.
#[test]
fn the_look_started_while_the_worktree_is_checked_out_decides_and_leaves() {
    let p = spare_project("wtearly");
    let t = p.template();
    let ours = || {
        sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND application_name LIKE 'xtask-db-%'"
            ),
        )
    };
    let run = p.xtask(&["db", "worktree", "--skip-generate", "early-a"]).ok();
    assert!(run.stderr.contains("no one is connected to the template, so it is copied directly"), "{}", run.stderr);
    assert_eq!(ours(), "0");
    wait_for("the background refill", || spare_ready(&p));
    // A pool's new connection: it pinged and stays, idle.
    let mut pool = Held::open(&t);
    pool.run("SELECT 1 AS pinged;");
    wait_for("the ping", || {
        sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{t}' AND query = 'SELECT 1 AS pinged;' AND state = 'idle'")) == "1"
    });
    let run = p.xtask(&["db", "worktree", "--skip-generate", "early-b"]).ok();
    assert!(run.stderr.contains("ready-made spare clone"), "{}", run.stderr);
    assert!(run.stderr.contains("the counters could not tell"), "{}", run.stderr);
    assert_eq!(ours(), "0");
}

/// A spare taken as the look checked it is not connected to for its migration ledger: the look
/// read the template's in the state it proved. What is pending on top of it is still applied,
/// and an applied migration edited since is still named.
#[test]
fn the_ledger_the_look_read_decides_what_is_pending_on_a_spare() {
    let p = spare_project("wtledger");
    let t = p.template();
    let _held = Held::open(&t);
    p.xtask(&["db", "worktree", "--skip-generate", "ledger-a"]).ok();
    wait_for("the background refill", || spare_ready(&p));
    // A migration the template does not have yet, committed where the next worktree branches.
    std::fs::write(
        p.dir.join("migrations/0099_after_the_template.sql"),
        "CREATE TABLE public.after_template (x int);\n",
    )
    .unwrap();
    git(&p.dir, &["add", "migrations"]);
    git(&p.dir, &["commit", "-qm", "a migration after the template"]);
    let run = p.xtask(&["db", "worktree", "--skip-generate", "ledger-b"]).ok();
    assert!(run.stderr.contains("ready-made spare clone"), "{}", run.stderr);
    assert!(run.stderr.contains("migrate  1 applied"), "{}", run.stderr);
    let b = p.dir.with_file_name(format!("{}-ledger-b", p.dir.file_name().unwrap().to_string_lossy()));
    assert_eq!(sql(&env_db(&b), "SELECT to_regclass('public.after_template') IS NOT NULL"), "t");
    wait_for("the refill", || spare_ready(&p));
    // An applied migration edited: named, as when the ledger is read from the new database.
    let first = std::fs::read_dir(p.dir.join("migrations")).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let mut text = std::fs::read_to_string(&first).unwrap();
    text.push_str("\n-- edited\n");
    std::fs::write(&first, text).unwrap();
    git(&p.dir, &["commit", "-qam", "an applied migration edited"]);
    let run = p.xtask(&["db", "worktree", "--skip-generate", "ledger-c"]).fails(2, "was edited after");
    assert!(run.stderr.contains(first.file_name().unwrap().to_str().unwrap()), "{}", run.stderr);
}
