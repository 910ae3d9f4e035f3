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
    let domain_comment = "SELECT obj_description('crm.phone_e164'::regtype, 'pg_type')";
    assert!(sql(&t, domain_comment).contains("+15551234567"), "the schema's own comment has a phone number");
    assert_eq!(
        sql(&clone, domain_comment),
        sql(&t, domain_comment),
        "a comment the migrations wrote is schema, not data"
    );
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

/// A database with personal data in every place it can live: a materialized view, a composite,
/// an array, json and jsonb, an inheritance pair, a partitioned table and a table's comment;
/// the planted originals, 1 000 of them.
fn planted(db: &str) -> Vec<String> {
    const FIRST: [&str; 10] =
        ["Alice", "Robert", "Maria", "James", "Sophie", "David", "Emma", "Thomas", "Laura", "Peter"];
    const LAST: [&str; 10] =
        ["Johnson", "Smith", "Garcia", "Miller", "Brown", "Davis", "Wilson", "Taylor", "Martin", "Clark"];
    sql(
        db,
        "CREATE SCHEMA shop; \
         CREATE TYPE shop.contact AS (label text, email text); \
         CREATE TABLE shop.people (id int PRIMARY KEY, fullname text, contact shop.contact NOT NULL, aliases text[], \
           profile jsonb NOT NULL, raw json, note varchar(200), active boolean NOT NULL DEFAULT true); \
         CREATE MATERIALIZED VIEW shop.people_mv AS SELECT id, fullname, contact, profile, note FROM shop.people; \
         CREATE TABLE shop.parties (id int PRIMARY KEY, email text); \
         CREATE TABLE shop.vendors (vat text) INHERITS (shop.parties); \
         CREATE TABLE shop.events (at date NOT NULL, origin text, detail jsonb) PARTITION BY RANGE (at); \
         CREATE TABLE shop.events_2026 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); \
         COMMENT ON TABLE shop.people IS 'Owner: planted.comment.owner@corp.example.com'",
    );
    let mut planted = vec!["planted.comment.owner@corp.example.com".to_string()];
    let mut people = Vec::new();
    for i in 0..100 {
        let name = format!("{} {}", FIRST[i % 10], LAST[i / 10]);
        let (home, alias, prof, raw) = (
            format!("p{i}.home@mail.example.org"),
            format!("p{i}.alias@mail.example.org"),
            format!("p{i}.profile@mail.example.org"),
            format!("p{i}.raw@mail.example.org"),
        );
        let phone = format!("+1555{i:07}");
        people.push(format!(
            "({i}, '{name}', ROW('home', '{home}'), ARRAY['{alias}', 'plain'], '{{\"mail\": \"{prof}\", \"plan\": \"gold\"}}', \
             '{{\"from\": \"{raw}\"}}', 'call {phone}')"
        ));
        planted.extend([name, home, alias, prof, raw, phone]);
    }
    sql(
        db,
        &format!(
            "INSERT INTO shop.people (id, fullname, contact, aliases, profile, raw, note) VALUES {}",
            people.join(", ")
        ),
    );
    let (mut parties, mut vendors, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..100 {
        parties.push(format!("({i}, 'party{i}@mail.example.org')"));
        vendors.push(format!("({}, 'vendor{i}@mail.example.org', 'VAT-{i}')", 1000 + i));
        planted.extend([format!("party{i}@mail.example.org"), format!("vendor{i}@mail.example.org")]);
        events.push(format!(
            "(DATE '2026-03-01' + {i}, '172.16.{}.{}', '{{\"by\": \"ev{i}@mail.example.org\"}}')",
            i / 50,
            i % 50 + 1
        ));
        planted.push(format!("172.16.{}.{}", i / 50, i % 50 + 1));
        if i > 1 {
            planted.push(format!("ev{i}@mail.example.org"));
        }
    }
    sql(db, &format!("INSERT INTO shop.parties VALUES {}", parties.join(", ")));
    sql(db, &format!("INSERT INTO shop.vendors VALUES {}", vendors.join(", ")));
    sql(db, &format!("INSERT INTO shop.events VALUES {}", events.join(", ")));
    sql(db, "UPDATE shop.events SET detail = NULL WHERE at < DATE '2026-03-03'; REFRESH MATERIALIZED VIEW shop.people_mv; ANALYZE");
    // A large object: pg_dump dumps it, masking cannot look inside.
    sql(db, "SELECT lo_from_bytea(0, convert_to('scan of the passport of planted.lo@mail.example.org', 'UTF8'))");
    planted.push("planted.lo@mail.example.org".into());
    assert_eq!(planted.len(), 1000);
    planted
}

/// The rule lines `db mask DB --check` suggests: the text after "add  " on each line, without
/// the hint after it.
fn suggested(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(": add  ").map(|(_, line)| line.split("   (").next().unwrap().to_string()))
        .collect()
}

fn set_rules(p: &Project, lines: &[String]) {
    let toml = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    let base = toml.split("\n[workspace.metadata.db.mask]").next().unwrap().to_string();
    std::fs::write(
        p.dir.join("Cargo.toml"),
        format!("{base}\n[workspace.metadata.db.mask]\n[workspace.metadata.db.mask.rules]\n{}\n", lines.join("\n")),
    )
    .unwrap();
}

#[test]
fn every_place_data_lives_is_masked_by_exactly_the_rules_the_check_suggests() {
    let p = Project::new("mevery");
    let db = format!("{}planted", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {db}"));
    let originals = planted(&db);

    let run = p.xtask(&["db", "mask", &db, "--check"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let lines = suggested(&run.stdout);
    for (column, rule) in [
        ("shop.people.fullname", "\"name\""),
        ("shop.people.contact", "{ fixed = \"(,)\" }"),
        ("shop.people.aliases", "\"null\""),
        ("shop.people.profile", "{ fixed = \"{}\" }"),
        ("shop.people.raw", "\"null\""),
        ("shop.people.note", "\"phone\""),
        ("shop.people.active", "\"keep\""),
        ("shop.vendors.email", "\"email\""),
        ("shop.events.origin", "\"ip\""),
    ] {
        assert!(lines.contains(&format!("\"{column}\" = {rule}")), "{column}: {}", run.stdout);
    }
    assert!(run.stdout.contains("redact  comment on table shop.people (holds e-mail addresses)"), "{}", run.stdout);
    assert!(run.stdout.contains("refresh  materialized view shop.people_mv"), "{}", run.stdout);
    assert!(lines.contains(&"\"pg_catalog.pg_largeobject.*\" = \"null\"".to_string()), "{}", run.stdout);
    set_rules(&p, &lines);
    p.xtask(&["db", "mask", &db, "--check"]).ok();

    dump(&db, &p.dir.join("dump/prod-20261201000000.dump"));
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    let dumped = Command::new("pg_dump")
        .args(["-d", &url_for(&clone).replacen(&format!(":{}@", password()), "@", 1)])
        .env("PGPASSWORD", password())
        .output()
        .unwrap();
    assert!(dumped.status.success());
    // pg_dump refreshes a materialized view at restore: its rows are read from the copy itself.
    // A large object's data is in the dump as hex: read it back as text.
    let text = String::from_utf8_lossy(&dumped.stdout).to_string()
        + &sql(&clone, "SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), E'\\n') FROM pg_largeobject_metadata")
        + &sql(&clone, "SELECT string_agg(m::text, E'\\n') FROM shop.people_mv m");
    let left: Vec<&String> = originals.iter().filter(|o| text.contains(o.as_str())).collect();
    assert!(left.is_empty(), "{} of 1000 planted values survived masking: {left:?}", left.len());
    assert_eq!(sql(&clone, "SELECT count(*) FROM shop.people_mv"), "100", "the view is refreshed, not emptied");
    assert_eq!(sql(&clone, "SELECT count(*) FROM pg_largeobject_metadata"), "0", "the large object is unlinked");

    // An inheritance child is masked once, by its own rule: the same value as anywhere else.
    let expected: String = xtask::mask::keyed_hash(KEY.as_bytes(), b"vendor7@mail.example.org")[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        sql(&clone, "SELECT email FROM ONLY shop.vendors WHERE id = 1007"),
        format!("user_{expected}@example.com")
    );

    // A table's `*` keep over personal content fails the check; so does an explicit `keep`,
    // unless marked reviewed with `keep!`.
    let mut starred: Vec<String> = lines.iter().filter(|l| !l.starts_with("\"shop.people.")).cloned().collect();
    starred.push("\"shop.people.*\" = \"keep\"".into());
    set_rules(&p, &starred);
    let run = p.xtask(&["db", "mask", &db, "--check"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains(
            "unreviewed column shop.people.fullname (text) holds people's names in 100 of 100 sampled value(s)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("unreviewed column shop.people.contact (shop.contact) holds e-mail addresses"),
        "{}",
        run.stdout
    );
    let mut kept = lines.clone();
    kept.retain(|l| !l.starts_with("\"shop.people.note\""));
    kept.push("\"shop.people.note\" = \"keep\"".into());
    set_rules(&p, &kept);
    let run = p.xtask(&["db", "mask", &db, "--check"]);
    assert!(run.stdout.contains("add  \"shop.people.note\" = \"phone\"   (or \"keep!\""), "{}", run.stdout);
    *kept.last_mut().unwrap() = "\"shop.people.note\" = \"keep!\"".into();
    set_rules(&p, &kept);
    p.xtask(&["db", "mask", &db, "--check"]).ok();
}

#[test]
fn a_key_is_any_byte_string_of_16_bytes_and_without_one_the_fix_fits_load_clone() {
    use std::os::unix::ffi::OsStrExt;
    let p = project("mkeybytes");
    p.xtask(&["db", "template", "create"]).ok();
    dump(&p.template(), &p.dir.join("dump/prod-20261201000000.dump"));
    let run = p.xtask(&["db", "load-clone", "--mask"]).fails(2, "no masking key: `XTASK_MASK_KEY` is not set");
    assert!(run.stderr.contains("without --mask") && !run.stderr.contains("clone-prod"), "{}", run.stderr);
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", "too-short")])
        .fails(2, "`XTASK_MASK_KEY` is 9 bytes, shorter than 16");
    // Not UTF-8: still a key.
    let key: &[u8] = b"\xff\xfe binary key \x80\x81\x82 material";
    let out = p
        .command(&p.dir, &["db", "load-clone", "--mask"], &[])
        .env("XTASK_MASK_KEY", std::ffi::OsStr::from_bytes(key))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let clone = format!("{}prod_clone", p.prefix);
    let staff_email = sql(&p.template(), "SELECT lower(email::text) FROM crm.staff ORDER BY id LIMIT 1");
    let expected: String =
        xtask::mask::keyed_hash(key, staff_email.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sql(&clone, "SELECT email FROM crm.staff ORDER BY id LIMIT 1"), format!("user_{expected}@example.com"));
}

#[test]
fn ctrl_c_during_a_masked_load_leaves_no_database_behind() {
    use std::os::unix::process::CommandExt;
    let p = project("mctrlc");
    p.xtask(&["db", "template", "create"]).ok();
    dump(&p.template(), &p.dir.join("dump/prod-20261201000000.dump"));
    for delay_ms in [300, 600, 1000, 1400] {
        // Ctrl-C in a terminal: SIGINT to the whole foreground process group, psql included.
        let mut child = p
            .command(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)])
            .process_group(0)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        // SAFETY: signalling the process group of our own child.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!stderr.contains("by hand"), "after {delay_ms} ms: {stderr}");
        let left: Vec<String> = p.databases().into_iter().filter(|d| d.contains("tmp_")).collect();
        assert!(left.is_empty(), "after {delay_ms} ms ({status}): {left:?} left behind; {stderr}");
        assert!(matches!(status.code(), Some(130) | Some(0)), "after {delay_ms} ms: {status}: {stderr}");
    }
}

#[test]
fn a_masked_copy_has_the_table_sizes_a_restore_gives() {
    let p = project("msize");
    p.xtask(&["db", "template", "create"]).ok();
    // Enough rows that the masking UPDATEs' dead tuples would show in pages.
    sql(
        &p.template(),
        "INSERT INTO crm.customers (organization_id, first_name, last_name, email, phone) \
         SELECT (SELECT min(id) FROM crm.organizations), 'First' || g, 'Last' || g, 'c' || g || '@mail.example.org', \
           '+1555' || lpad(g::text, 7, '0') FROM generate_series(1, 20000) g",
    );
    dump(&p.template(), &p.dir.join("dump/prod-20261201000000.dump"));
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    // The masked copy, dumped and restored: the sizes a restore of masked data gives.
    let again = p.dir.join("dump/masked.dump");
    dump(&clone, &again);
    let restored = format!("{}restored", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {restored}"));
    let out = Command::new(xtask::pg::tools::find("pg_restore").unwrap())
        .args(["--no-owner", "-d", &url_for(&restored).replacen(&format!(":{}@", password()), "@", 1)])
        .arg(&again)
        .env("PGPASSWORD", password())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pages =
        "SELECT sum(pg_relation_size(c.oid) / 8192) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'crm' AND c.relkind = 'r'";
    let (copy, restore): (f64, f64) = (sql(&clone, pages).parse().unwrap(), sql(&restored, pages).parse().unwrap());
    assert!(restore > 100.0, "{restore} pages: too small to tell");
    assert!(copy <= restore * 1.05 + 10.0, "the masked copy has {copy} pages of tables, a restore {restore}");
}

/// Triggers and rules enabled ALWAYS or REPLICA fire under `session_replication_role =
/// replica`: one that puts the original back, or turns the UPDATE into nothing, must not undo
/// the masking; each is enabled again as it was.
#[test]
fn a_trigger_or_rule_enabled_always_or_replica_cannot_undo_the_masking() {
    let p = Project::new("mtrig");
    let db = format!("{}trig", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {db}"));
    sql(
        &db,
        "CREATE SCHEMA shop; \
         CREATE FUNCTION shop.keep_old() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.email := OLD.email; RETURN NEW; END $$; \
         CREATE TABLE shop.a (id int PRIMARY KEY, email text); \
         CREATE TRIGGER a_keep BEFORE UPDATE ON shop.a FOR EACH ROW EXECUTE FUNCTION shop.keep_old(); \
         ALTER TABLE shop.a ENABLE ALWAYS TRIGGER a_keep; \
         CREATE TABLE shop.b (id int PRIMARY KEY, email text); \
         CREATE TRIGGER b_keep BEFORE UPDATE ON shop.b FOR EACH ROW EXECUTE FUNCTION shop.keep_old(); \
         ALTER TABLE shop.b ENABLE REPLICA TRIGGER b_keep; \
         CREATE TABLE shop.c (id int PRIMARY KEY, email text); \
         CREATE RULE c_frozen AS ON UPDATE TO shop.c DO INSTEAD NOTHING; \
         ALTER TABLE shop.c ENABLE ALWAYS RULE c_frozen; \
         CREATE TABLE shop.p (id int, email text) PARTITION BY RANGE (id); \
         CREATE TABLE shop.p1 PARTITION OF shop.p FOR VALUES FROM (0) TO (100); \
         CREATE TRIGGER p_keep BEFORE UPDATE ON shop.p FOR EACH ROW EXECUTE FUNCTION shop.keep_old(); \
         ALTER TABLE shop.p ENABLE ALWAYS TRIGGER p_keep; \
         INSERT INTO shop.a VALUES (1, 'always.trigger@mail.example.org'); \
         INSERT INTO shop.b VALUES (1, 'replica.trigger@mail.example.org'); \
         INSERT INTO shop.c VALUES (1, 'always.rule@mail.example.org'); \
         INSERT INTO shop.p VALUES (1, 'partition.trigger@mail.example.org')",
    );
    let lines: Vec<String> = ["a", "b", "c", "p"]
        .iter()
        .flat_map(|t| [format!("\"shop.{t}.id\" = \"keep\""), format!("\"shop.{t}.email\" = \"email\"")])
        .collect();
    set_rules(&p, &lines);
    p.xtask(&["db", "mask", &db, "--check"]).ok();
    let states = "SELECT string_agg(x, ', ' ORDER BY x) FROM (SELECT tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text AS x \
                  FROM pg_trigger WHERE NOT tgisinternal UNION ALL SELECT ev_class::regclass || ' ' || rulename || ' ' || ev_enabled::text \
                  FROM pg_rewrite WHERE rulename = 'c_frozen') s";
    let before = sql(&db, states);
    dump(&db, &p.dir.join("dump/prod-20261201000000.dump"));
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    let left = sql(
        &clone,
        "SELECT string_agg(email, ', ' ORDER BY email) FROM (SELECT email FROM shop.a UNION ALL SELECT email FROM shop.b \
         UNION ALL SELECT email FROM shop.c UNION ALL SELECT email FROM shop.p) e WHERE email NOT LIKE '%@example.com'",
    );
    assert_eq!(left, "", "originals survived masking");
    assert_eq!(sql(&clone, states), before, "each trigger and rule is enabled again as it was");
}

/// A generated column that looks personal is suggested `keep` (it cannot be written; it is
/// computed again from the masked column), so the suggested lines pass the check.
#[test]
fn a_generated_column_is_suggested_a_rule_the_check_accepts_and_is_computed_from_the_mask() {
    let p = Project::new("mgen");
    let db = format!("{}gen", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {db}"));
    sql(
        &db,
        "CREATE SCHEMA shop; \
         CREATE TABLE shop.a (id int PRIMARY KEY, email text, email_lower text GENERATED ALWAYS AS (lower(email)) STORED); \
         INSERT INTO shop.a (id, email) VALUES (1, 'Generated.From@mail.example.org')",
    );
    let run = p.xtask(&["db", "mask", &db, "--check"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let lines = suggested(&run.stdout);
    assert!(lines.contains(&"\"shop.a.email_lower\" = \"keep\"".to_string()), "{}", run.stdout);
    set_rules(&p, &lines);
    p.xtask(&["db", "mask", &db, "--check"]).ok();
    dump(&db, &p.dir.join("dump/prod-20261201000000.dump"));
    p.xtask_in(&p.dir, &["db", "load-clone", "--mask"], &[("XTASK_MASK_KEY", KEY)]).ok();
    let clone = format!("{}prod_clone", p.prefix);
    assert_eq!(
        sql(
            &clone,
            "SELECT count(*) FROM shop.a WHERE email_lower LIKE '%@example.com' AND email_lower = lower(email)"
        ),
        "1"
    );
}

/// A table never analyzed (a `pg_restore` just made it: `relpages` is 0) whose first rows are
/// clean: the sample draws pages of the whole table, not the first rows of its file.
#[test]
fn a_table_never_analyzed_is_sampled_over_its_whole_file() {
    let p = Project::new("mfresh");
    let db = format!("{}unanalyzed", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {db}"));
    sql(
        &db,
        "CREATE SCHEMA shop; \
         CREATE TABLE shop.log (id int PRIMARY KEY, label text) WITH (autovacuum_enabled = false); \
         INSERT INTO shop.log SELECT g, 'clean label ' || g FROM generate_series(1, 12000) g; \
         INSERT INTO shop.log SELECT g, 'person' || g || '@mail.example.org' FROM generate_series(12001, 120000) g",
    );
    assert_eq!(sql(&db, "SELECT relpages FROM pg_class WHERE oid = 'shop.log'::regclass"), "0");
    set_rules(&p, &["\"shop.log.*\" = \"keep\"".to_string()]);
    let run = p.xtask(&["db", "mask", &db, "--check"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(suggested(&run.stdout).contains(&"\"shop.log.label\" = \"email\"".to_string()), "{}", run.all());
}
