//! `db load-clone` and `db drop-clone` with real `pg_dump -Fc` files and `pg_dump -Fd`
//! directories on a real server.

use crate::support::{dump, dump_as, sql, Project};

fn counts(db: &str) -> String {
    sql(db, "SELECT (SELECT count(*) FROM crm.customers) || '/' || (SELECT count(*) FROM audit.events) || '/' || (SELECT count(*) FROM crm.messages)")
}

#[test]
fn load_clone_restores_the_newest_dump_and_drop_clone_removes_it() {
    let p = Project::new("lclone");
    p.xtask(&["db", "template", "create"]).ok();
    let t = p.template();
    dump(&t, &p.dir.join("dump/prod-20260101000000.dump"));
    sql(&t, "INSERT INTO crm.organizations (name, slug) VALUES ('Newer', 'newer')");
    dump(&t, &p.dir.join("dump/prod-20260102000000.dump"));

    let run = p.xtask(&["db", "load-clone"]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    assert!(run.stderr.contains(&format!("APP_DB_NAME_OVERRIDE={clone}")), "{}", run.stderr);
    assert_eq!(counts(&clone), counts(&t));
    assert_eq!(
        sql(&clone, "SELECT count(*) FROM crm.organizations WHERE slug = 'newer'"),
        "1",
        "the newest dump was loaded"
    );

    // An explicit dump replaces the copy.
    p.xtask(&["db", "load-clone", "dump/prod-20260101000000.dump"]).ok();
    assert_eq!(sql(&clone, "SELECT count(*) FROM crm.organizations WHERE slug = 'newer'"), "0");

    p.xtask(&["db", "drop-clone"]).fails(2, "pass -y");
    assert!(p.databases().contains(&clone));
    let dry = p.xtask(&["db", "drop-clone", "--dry-run"]).ok();
    assert!(dry.stderr.contains("--dry-run") && dry.stderr.contains(&format!("Drop `{clone}`")), "{}", dry.stderr);
    assert!(p.databases().contains(&clone), "--dry-run dropped it");
    p.xtask(&["db", "drop-clone", "-y"]).ok();
    assert!(!p.databases().contains(&clone));
}

#[test]
fn missing_roles_are_warnings_and_a_broken_dump_leaves_nothing() {
    let p = Project::new("lcwarn");
    p.xtask(&["db", "template", "create"]).ok();
    let t = p.template();
    // A role production has and this server does not: create it, use it, dump, then remove it.
    let role = format!("{}reporting", p.prefix);
    sql("postgres", &format!("CREATE ROLE {role}"));
    sql(&t, &format!("CREATE POLICY reporting_read ON crm.tags FOR SELECT TO {role} USING (true)"));
    let file = p.dir.join("dump/prod-20260101000000.dump");
    dump(&t, &file);
    sql(&t, "DROP POLICY reporting_read ON crm.tags");
    sql("postgres", &format!("DROP ROLE {role}"));

    let run = p.xtask(&["db", "load-clone"]).ok();
    assert!(run.stderr.contains("warning:") && run.stderr.contains(&role), "{}", run.stderr);
    let clone = format!("{}prod_clone", p.prefix);
    assert_eq!(counts(&clone), counts(&t));

    // A truncated dump: fatal, and neither a half-loaded database nor the old copy's loss.
    let bytes = std::fs::read(&file).unwrap();
    let broken = p.dir.join("dump/prod-20260102000000.dump");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let before = p.databases();
    p.xtask(&["db", "load-clone"]).fails(2, "pg_restore failed");
    assert_eq!(p.databases(), before, "nothing half-made, the previous copy kept");
    p.xtask(&["db", "load-clone", "dump/nope.dump"]).fails(2, "does not exist");
}

/// `clone-prod` writes a directory by default (`pg_dump -Fd -j N`): `load-clone` picks the newest
/// dump, file or directory, and restores it; a directory without `toc.dat` is no dump, neither
/// picked nor loaded when named (nor by `rehearse --from`).
#[test]
fn load_clone_picks_and_restores_a_directory_dump_and_ignores_a_directory_without_toc() {
    let p = Project::new("lcdir");
    p.xtask(&["db", "template", "create"]).ok();
    let t = p.template();
    dump(&t, &p.dir.join("dump/prod-20260101000000.dump"));
    sql(&t, "INSERT INTO crm.organizations (name, slug) VALUES ('Newer', 'newer')");
    dump_as(&t, &p.dir.join("dump/prod-20260102000000.dump"), &["-Fd", "-j", "2"]);
    // Newer by name, but no dump: an interrupted copy, or a directory of something else.
    let stray = p.dir.join("dump/prod-20260103000000.dump");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("3001.dat.gz"), b"not a dump").unwrap();

    let dry = p.xtask(&["db", "load-clone", "--dry-run"]).ok();
    assert!(dry.stderr.contains("prod-20260102000000.dump"), "{}", dry.stderr);
    let run = p.xtask(&["db", "load-clone"]).ok();
    assert!(run.stderr.contains("prod-20260102000000.dump"), "{}", run.stderr);
    let clone = format!("{}prod_clone", p.prefix);
    assert_eq!(counts(&clone), counts(&t));
    assert_eq!(
        sql(&clone, "SELECT count(*) FROM crm.organizations WHERE slug = 'newer'"),
        "1",
        "the directory was loaded"
    );

    // Named: the directory without toc.dat is refused, and the copy is kept.
    let before = p.databases();
    let run = p.xtask(&["db", "load-clone", "dump/prod-20260103000000.dump"]).fails(2, "without toc.dat");
    assert!(!run.stderr.contains("pg_restore"), "refused before pg_restore: {}", run.stderr);
    assert_eq!(p.databases(), before);
    p.xtask(&["db", "rehearse", "--from", "dump/prod-20260103000000.dump", "--no-smoke"]).fails(2, "without toc.dat");
}
