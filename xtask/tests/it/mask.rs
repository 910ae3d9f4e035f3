//! Masking on a real server: `db mask --check` (strict classification) and `load-clone --mask`
//! with the repository's rules for the app's schema.

use std::process::Command;

use crate::support::{dump, password, sql, url_for, Project};

const KEY: &str = "a-test-key-of-more-than-16-bytes";

/// A project with the repository's `[workspace.metadata.db.mask]` (rules for the app's schema).
fn project(tag: &str) -> Project {
    let p = Project::new(tag);
    let root = std::fs::read_to_string(crate::support::repo_root().join("Cargo.toml")).unwrap();
    let start = root.find("[workspace.metadata.db.mask]").expect("the repository has mask rules");
    let end = root[start..].find("\n[profile").map_or(root.len(), |n| start + n);
    let mut toml = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    toml.push('\n');
    toml.push_str(&root[start..end]);
    std::fs::write(p.dir.join("Cargo.toml"), toml).unwrap();
    p
}

/// Every masked column's values, in a stable order.
fn masked_values(db: &str) -> String {
    sql(
        db,
        "SELECT string_agg(concat_ws('|', id, first_name, last_name, email, phone, date_of_birth), E'\\n' ORDER BY id) FROM crm.customers",
    ) + &sql(db, "SELECT string_agg(concat_ws('|', id, email, full_name), E'\\n' ORDER BY id) FROM crm.staff")
}

#[test]
fn a_masked_load_hides_every_original_and_keeps_joins_uniqueness_and_determinism() {
    let p = project("mask");
    p.xtask(&["db", "template", "create"]).ok();
    let t = p.template();
    let originals: Vec<String> = sql(
        &t,
        "SELECT email::text FROM crm.customers WHERE email IS NOT NULL UNION ALL SELECT phone FROM crm.customers WHERE phone IS NOT NULL \
         UNION ALL SELECT email::text FROM crm.staff UNION ALL SELECT full_name FROM crm.staff UNION ALL SELECT body FROM crm.messages",
    )
    .lines()
    .map(str::to_string)
    .collect();
    assert!(originals.len() > 10, "the seed has personal data to hide");
    let joins = "SELECT count(*) FROM crm.conversations v JOIN crm.customers c ON c.id = v.customer_id JOIN crm.messages m ON m.conversation_id = v.id";
    let before_joins = sql(&t, joins);
    let audit = sql(&t, "SELECT count(*) FROM audit.events");
    let file = p.dir.join("dump/prod-20261201000000.dump");
    dump(&t, &file);

    // No key: refused before anything is restored.
    p.xtask(&["db", "load-clone", "--mask"]).fails(2, "no masking key: `XTASK_MASK_KEY` is not set");
    let run = p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)]).ok();
    assert!(!run.all().contains(KEY), "the key is never printed");
    let clone = format!("{}prod_clone", p.prefix);
    let dumped = Command::new("pg_dump")
        .args(["--data-only", "-d", &url_for(&clone).replacen(&format!(":{}@", password()), "@", 1)])
        .env("PGPASSWORD", password())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dumped.stdout);
    for o in &originals {
        assert!(!text.contains(o.as_str()), "{o:?} is still in the masked copy");
    }
    // Names: no masked one is a name the copy had (a name can be part of other text, so not searched).
    let names = |db: &str| {
        sql(db, "SELECT string_agg(DISTINCT n, ',') FROM (SELECT first_name AS n FROM crm.customers UNION SELECT last_name FROM crm.customers) x")
    };
    let masked: std::collections::HashSet<String> = names(&clone).split(',').map(str::to_string).collect();
    assert!(names(&t).split(',').all(|n| !masked.contains(n)), "{masked:?}");
    assert_eq!(sql(&clone, joins), before_joins, "joins over the keys hold");
    assert_eq!(sql(&clone, "SELECT count(*) FROM audit.events"), audit, "no trigger fired: no audit rows written");
    assert_eq!(
        sql(
            &clone,
            "SELECT count(*) FROM audit.events WHERE old_row::text NOT IN ('{}') OR new_row::text NOT IN ('{}')"
        ),
        "0",
        "the row images are gone"
    );
    assert_eq!(
        sql(&clone, "SELECT count(*) - count(DISTINCT (organization_id, lower(email::text))) FROM crm.customers WHERE email IS NOT NULL"),
        "0",
        "unique inputs stay unique"
    );
    assert_eq!(
        sql(&clone, "SELECT count(*) FROM crm.customers WHERE email::text !~ '^user_[0-9a-f]{16}@example.com$'"),
        "0"
    );
    let first = masked_values(&clone);

    // The same key again: the same values; another key: others.
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)]).ok();
    assert_eq!(masked_values(&clone), first);
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", "another-key-also-long-enough")]).ok();
    assert_ne!(masked_values(&clone), first);
    // The server computes the keyed hash as the Rust implementation does.
    let staff_email = sql(&t, "SELECT lower(email::text) FROM crm.staff ORDER BY id LIMIT 1");
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)]).ok();
    let expected: String = xtask::mask::keyed_hash(KEY.as_bytes(), staff_email.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sql(&clone, "SELECT email FROM crm.staff ORDER BY id LIMIT 1"), format!("user_{expected}@example.com"));
}

#[test]
fn strict_mode_refuses_an_unreviewed_column_a_migration_added() {
    let p = project("mstrict");
    p.xtask(&["db", "fresh"]).ok();
    p.xtask(&["db", "mask", "--check"]).ok();
    std::fs::write(
        p.dir.join("migrations/0011_customer_nickname.sql"),
        "ALTER TABLE crm.customers ADD COLUMN nickname text;\nALTER TABLE crm.staff ADD COLUMN home_address text;\n",
    )
    .unwrap();
    p.xtask(&["db", "fresh"]).ok();
    let run = p.xtask(&["db", "mask", "--check"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout
            .contains("unreviewed column crm.staff.home_address (text): add  \"crm.staff.home_address\" = \"redact\""),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("crm.customers.nickname"),
        "a column under a table's `*` that does not look personal is covered: {}",
        run.stdout
    );
    // Masking itself stops before a row is touched.
    p.xtask(&["db", "template", "create"]).ok();
    dump(&p.template(), &p.dir.join("dump/prod-20261201000000.dump"));
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)])
        .fails(2, "not reviewed: nothing was masked");
    assert!(!p.databases().contains(&format!("{}prod_clone", p.prefix)), "{:?}", p.databases());
}

#[test]
fn masked_values_that_collide_under_unique_are_an_error_and_nothing_is_masked() {
    let p = project("mcollide");
    let toml = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    std::fs::write(
        p.dir.join("Cargo.toml"),
        toml.replace("\"crm.tags.name\" = \"keep\"", "\"crm.tags.name\" = { fixed = \"same\" }"),
    )
    .unwrap();
    p.xtask(&["db", "template", "create"]).ok();
    assert!(
        sql(&p.template(), "SELECT count(*) FROM crm.tags").parse::<i64>().unwrap() > 1,
        "the seed has several tags"
    );
    crate::support::dump(&p.template(), &p.dir.join("dump/prod-20261201000000.dump"));
    let run = p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)]);
    run.fails(2, "masked values collide under a UNIQUE constraint");
    assert!(!p.databases().iter().any(|d| d.ends_with("prod_clone") || d.contains("tmp_")), "{:?}", p.databases());
}
