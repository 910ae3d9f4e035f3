//! `db template create` and `db migrate` on a real server.

use std::time::{Duration, Instant};

use crate::support::{sql, Project};

fn migration_files() -> usize {
    std::fs::read_dir(crate::support::repo_root().join("migrations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count()
}

#[test]
fn template_create_builds_from_migrations_and_seed() {
    let p = Project::new("tcreate");
    let t = p.template();
    p.xtask(&["db", "template", "create"]).ok();
    assert_eq!(p.databases(), vec![t.clone()], "only the template remains");
    let ledger = sql(&t, "SELECT count(*), bool_and(success) FROM _sqlx_migrations");
    assert_eq!(ledger, format!("{}|t", migration_files()));
    let customers: i64 = sql(&t, "SELECT count(*) FROM crm.customers").parse().unwrap();
    assert!(customers >= 100, "seed rows: {customers}");
    let org = sql(&t, "SELECT count(*) FROM crm.organizations");
    assert_eq!(org, "1");
    let marker = sql(
        "postgres",
        &format!("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{t}'"),
    );
    assert!(marker.starts_with("xtask-db {\"") && marker.contains("\"kind\":\"template\""), "{marker}");

    let status = p.xtask(&["db", "status"]).ok();
    assert!(status.stdout.contains(&format!("template  {t}")), "{}", status.stdout);
    assert!(status.stdout.contains(&format!("{} applied", migration_files())), "{}", status.stdout);

    // A second run refuses and changes nothing.
    sql(&t, "INSERT INTO crm.organizations (name, slug) VALUES ('Kept', 'kept')");
    p.xtask(&["db", "template", "create"]).fails(2, "already exists");
    assert_eq!(sql(&t, "SELECT count(*) FROM crm.organizations WHERE slug = 'kept'"), "1");

    // --force asks first (no terminal here: refused), and with -y rebuilds it from scratch,
    // leaving no side databases.
    p.xtask(&["db", "template", "create", "--force"]).fails(2, "pass -y");
    assert_eq!(sql(&t, "SELECT count(*) FROM crm.organizations WHERE slug = 'kept'"), "1");
    p.xtask(&["db", "template", "create", "--force", "-y"]).ok();
    assert_eq!(sql(&t, "SELECT count(*) FROM crm.organizations WHERE slug = 'kept'"), "0");
    assert_eq!(p.databases(), vec![t]);
}

#[test]
fn a_failing_seed_leaves_no_database() {
    let p = Project::new("tfail");
    let seed = std::fs::read_to_string(p.dir.join("seed.sql")).unwrap();
    std::fs::write(p.dir.join("seed.sql"), format!("{seed}\nSELECT * FROM no_such_table;\n")).unwrap();
    let run = p.xtask(&["db", "template", "create"]).fails(2, "no_such_table");
    assert!(run.stderr.contains("removing the unfinished database"), "{}", run.stderr);
    assert_eq!(p.databases(), Vec::<String>::new());
}

#[test]
fn a_failing_rebuild_keeps_the_old_template() {
    let p = Project::new("tkeep");
    let t = p.template();
    p.xtask(&["db", "template", "create"]).ok();
    sql(&t, "INSERT INTO crm.organizations (name, slug) VALUES ('Kept', 'kept')");
    std::fs::write(p.dir.join("seed.sql"), "SELECT 1/0;\n").unwrap();
    p.xtask(&["db", "template", "create", "--force", "-y"]).fails(2, "division by zero");
    assert_eq!(p.databases(), vec![t.clone()]);
    assert_eq!(sql(&t, "SELECT count(*) FROM crm.organizations WHERE slug = 'kept'"), "1");
}

#[test]
fn an_interrupted_build_leaves_no_database() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let p = Project::new("tsig");
        std::fs::write(p.dir.join("seed.sql"), "SELECT pg_sleep(60);\n").unwrap();
        let child =
            p.command(&p.dir, &["db", "template", "create"], &[]).stderr(std::process::Stdio::piped()).spawn().unwrap();
        // Wait until the build is under way: the staging database exists and the seed is running.
        let start = Instant::now();
        while !sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
        )
        .starts_with('1')
        {
            assert!(start.elapsed() < Duration::from_secs(60), "the build never reached the seed step");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(p.databases().len(), 1, "staging database exists mid-build");
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + signal), "{stderr}");
        assert!(stderr.lines().last().unwrap().contains("interrupted"), "{stderr}");
        assert_eq!(p.databases(), Vec::<String>::new(), "{stderr}");
    }
}

#[test]
fn migrate_applies_pending_and_names_an_edited_migration() {
    let p = Project::new("tmig");
    let db = format!("{}work", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {db}"));
    let env = [("DATABASE_URL", crate::support::url_for(&db))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p.xtask_in(&p.dir, &["db", "migrate"], &env).ok();
    assert_eq!(sql(&db, "SELECT count(*) FROM _sqlx_migrations"), migration_files().to_string());
    let again = p.xtask_in(&p.dir, &["db", "migrate"], &env).ok();
    assert!(again.stderr.contains("up to date"), "{}", again.stderr);

    let file = std::fs::read_dir(p.dir.join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("0003_"))
        .unwrap();
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("\n-- an edit after the fact\n");
    std::fs::write(&file, text).unwrap();
    let run = p.xtask_in(&p.dir, &["db", "migrate"], &env).fails(2, "migration 3");
    assert!(run.stderr.contains(&*file.file_name().unwrap().to_string_lossy()), "{}", run.stderr);
}

#[test]
fn migrate_on_a_missing_database() {
    let p = Project::new("tmiss");
    let url = crate::support::url_for(&format!("{}nothere", p.prefix));
    p.xtask_in(&p.dir, &["db", "migrate"], &[("DATABASE_URL", &url)]).fails(2, "does not exist");
}

#[test]
fn force_never_drops_a_handmade_database_without_asking() {
    let p = Project::new("thand");
    let handmade = format!("{}handmade", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {handmade}"));
    sql(&handmade, "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)");
    let env = [("WORKTREE_TEMPLATE_DB", handmade.as_str())];
    let run = p.xtask_in(&p.dir, &["db", "template", "create", "--force"], &env).fails(2, "pass -y");
    assert!(run.stderr.contains("was not built by `db template create`"), "{}", run.stderr);
    assert_eq!(sql(&handmade, "SELECT x FROM precious"), "42");
    p.xtask_in(&p.dir, &["db", "template", "create", "--force", "-y"], &env).ok();
    assert_eq!(sql(&handmade, "SELECT to_regclass('precious') IS NULL"), "t");
}

#[test]
fn a_prefix_too_long_for_its_names_is_refused_not_a_panic() {
    let p = Project::new("tlong");
    for prefix in ["a".repeat(46), "a".repeat(55), "a".repeat(80), "Upper_".into()] {
        let run = p.xtask_in(&p.dir, &["db", "status"], &[("XTASK_DB_PREFIX", prefix.as_str())]);
        assert_eq!(run.code, 2, "{prefix:?}: {}", run.stderr);
        assert!(run.stderr.contains("configuration key `prefix`"), "{prefix:?}: {}", run.stderr);
    }
}
