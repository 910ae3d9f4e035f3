//! `db schema-diff`, `db fresh` and `db generate` on a real server.

use crate::support::{git, password, sql, url_for, Project, Run};

/// A schema with one of everything the comparison must see.
const BASE: &str = "
CREATE SCHEMA s2;
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE DOMAIN posint AS integer CONSTRAINT posint_check CHECK (VALUE > 0);
CREATE SEQUENCE seq1 INCREMENT 1 START 1;
CREATE TABLE parent (id integer PRIMARY KEY, name text NOT NULL DEFAULT 'x', amount numeric(10,2) CONSTRAINT parent_amount_check CHECK (amount >= 0), m mood);
CREATE TABLE child (id integer PRIMARY KEY, parent_id integer CONSTRAINT child_parent_id_fkey REFERENCES parent(id) ON DELETE CASCADE, n posint);
CREATE UNIQUE INDEX child_n_idx ON child (n);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.name := upper(NEW.name);  -- a comment; inside the body
  RETURN NEW;
END $$;
CREATE TRIGGER parent_touch BEFORE INSERT ON parent FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW v AS SELECT id, name FROM parent;
CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS c FROM child;
ALTER TABLE parent ENABLE ROW LEVEL SECURITY;
CREATE POLICY p_all ON parent USING (id > 0);
CREATE TABLE events (id integer, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE s2.other (id integer);
";

fn diff(p: &Project, a: &str, b: &str, extra: &[&str]) -> Run {
    let mut args = vec!["db", "schema-diff", "--a", a, "--b", b];
    args.extend_from_slice(extra);
    p.xtask(&args)
}

fn create(p: &Project, name: &str, ddl: &str) -> String {
    let db = format!("{}{name}", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {db}"));
    sql(&db, ddl);
    db
}

#[test]
fn equal_schemas_built_by_different_routes() {
    let p = Project::new("sdeq");
    let a = create(&p, "a", BASE);
    // Other statement order, a column appended later, constraints added afterwards.
    let reordered = "
CREATE TABLE s2.other (id integer);
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE DOMAIN posint AS integer CONSTRAINT posint_check CHECK (VALUE > 0);
CREATE TABLE parent (id integer PRIMARY KEY, name text NOT NULL DEFAULT 'x', m mood);
CREATE TABLE child (id integer PRIMARY KEY, parent_id integer, n posint);
ALTER TABLE parent ADD COLUMN amount numeric(10,2);
ALTER TABLE parent ADD CONSTRAINT parent_amount_check CHECK (amount >= 0);
ALTER TABLE child ADD CONSTRAINT child_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES parent(id) ON DELETE CASCADE;
CREATE TABLE events (id integer, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS c FROM child;
CREATE VIEW v AS SELECT id, name FROM parent;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.name := upper(NEW.name);  -- a comment; inside the body
  RETURN NEW;
END $$;
CREATE TRIGGER parent_touch BEFORE INSERT ON parent FOR EACH ROW EXECUTE FUNCTION touch();
CREATE UNIQUE INDEX child_n_idx ON child (n);
CREATE POLICY p_all ON parent USING (id > 0);
ALTER TABLE parent ENABLE ROW LEVEL SECURITY;
CREATE SCHEMA s2_unused; DROP SCHEMA s2_unused;
CREATE SEQUENCE seq1 INCREMENT 1 START 1;
";
    // (`CREATE SCHEMA s2` must come first for s2.other.)
    let b = create(&p, "b", &format!("CREATE SCHEMA s2;{reordered}"));
    // Different data and sequence positions.
    sql(&b, "INSERT INTO parent (id, name, amount, m) VALUES (1, 'a', 1, 'ok'); SELECT nextval('seq1'); SELECT nextval('seq1'); REFRESH MATERIALIZED VIEW mv;");
    let run = diff(&p, &a, &b, &[]).ok();
    assert!(run.stderr.contains("schemas are equal"), "{}", run.stderr);
    // Both server versions and the pg_dump version are printed.
    let server_lines =
        run.stderr.lines().filter(|l| l.starts_with("database `") && l.contains(": PostgreSQL ")).count();
    assert_eq!(server_lines, 2, "{}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("pg_dump ") && l.chars().nth(8).is_some_and(|c| c.is_ascii_digit())),
        "{}",
        run.stderr
    );

    // Column order is ignored by default and compared on request.
    let strict = diff(&p, &a, &b, &["--strict-column-order"]).verdict("schemas differ");
    assert!(strict.stdout.contains("amount"), "{}", strict.stdout);

    // A dump → restore round trip, and a plain `pg_dump -s` file against the database.
    let c = format!("{}c", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {c}"));
    let strip = |db: &str| url_for(db).replacen(&format!(":{}@", password()), "@", 1);
    let dump = std::process::Command::new("sh")
        .args(["-c", &format!("pg_dump -d '{}' | psql -q -X -v ON_ERROR_STOP=1 -d '{}'", strip(&a), strip(&c))])
        .env("PGPASSWORD", password())
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    diff(&p, &a, &c, &[]).ok();
    let file = p.dir.join("a-schema.sql");
    let out = std::process::Command::new("pg_dump")
        .args(["-s", "-d", &strip(&a)])
        .env("PGPASSWORD", password())
        .output()
        .unwrap();
    std::fs::write(&file, out.stdout).unwrap();
    diff(&p, file.to_str().unwrap(), &b, &[]).ok();
    assert!(p.dir.join("dump/schema-diff").read_dir().unwrap().count() >= 2, "canonical forms written");
}

#[test]
fn each_kind_of_difference_is_found_and_named() {
    let p = Project::new("sddiff");
    let a = create(&p, "base", BASE);
    let cases: &[(&str, &str, &str)] = &[
        ("coltype", "ALTER TABLE child ALTER COLUMN id TYPE bigint", "table public.child"),
        ("default", "ALTER TABLE parent ALTER COLUMN name SET DEFAULT 'y'", "table public.parent"),
        ("nullable", "ALTER TABLE parent ALTER COLUMN name DROP NOT NULL", "table public.parent"),
        ("rename", "ALTER TABLE s2.other RENAME COLUMN id TO other_id", "table s2.other"),
        ("body", "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  NEW.name := lower(NEW.name);  -- a comment; inside the body\n  RETURN NEW;\nEND $$", "function public.touch()"),
        ("trigger", "DROP TRIGGER parent_touch ON parent", "trigger parent_touch"),
        ("index", "DROP INDEX child_n_idx", "child_n_idx"),
        ("unique", "DROP INDEX child_n_idx; CREATE INDEX child_n_idx ON child (n)", "index child_n_idx"),
        ("check", "ALTER TABLE parent DROP CONSTRAINT parent_amount_check; ALTER TABLE parent ADD CONSTRAINT parent_amount_check CHECK (amount > 0)", "table public.parent"),
        ("enum", "ALTER TYPE mood ADD VALUE 'happy'", "type public.mood"),
        ("view", "CREATE OR REPLACE VIEW v AS SELECT id, name, 1 AS one FROM parent", "view public.v"),
        ("matview", "DROP MATERIALIZED VIEW mv; CREATE MATERIALIZED VIEW mv AS SELECT count(*) + 1 AS c FROM child", "materialized view public.mv"),
        ("fk", "ALTER TABLE child DROP CONSTRAINT child_parent_id_fkey; ALTER TABLE child ADD CONSTRAINT child_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES parent(id) ON DELETE SET NULL", "constraint child_parent_id_fkey"),
        ("policy", "DROP POLICY p_all ON parent; CREATE POLICY p_all ON parent USING (id > 1)", "policy p_all"),
        ("rlsoff", "ALTER TABLE parent DISABLE ROW LEVEL SECURITY", "changed: table public.parent\n    row level security: only in a"),
        ("partition", "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')", "events_2026"),
        ("domain", "ALTER DOMAIN posint DROP CONSTRAINT posint_check; ALTER DOMAIN posint ADD CONSTRAINT posint_check CHECK (VALUE > 1)", "domain public.posint"),
        ("sequence", "ALTER SEQUENCE seq1 INCREMENT BY 5", "sequence public.seq1"),
        ("extension", "CREATE EXTENSION IF NOT EXISTS pg_trgm", "extension pg_trgm"),
        ("othercol", "ALTER TABLE s2.other ADD COLUMN x integer", "table s2.other"),
        ("publication", "CREATE PUBLICATION pub_parent FOR TABLE parent", "PUBLICATION pub_parent"),
        // The kinds without a rule of their own are compared too, and named by kind and name.
        ("eventtrigger", "CREATE FUNCTION et() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$; CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION et()", "only in b: event trigger et"),
        ("statistics", "CREATE STATISTICS st ON id, name FROM parent", "only in b: statistics public.st"),
        ("collation", "CREATE COLLATION c1 FROM \"C\"", "only in b: collation public.c1"),
        ("cast", "CREATE CAST (mood AS integer) WITH INOUT", "only in b: cast (public.mood AS integer)"),
        ("operator", "CREATE FUNCTION mood_eq(mood, mood) RETURNS boolean LANGUAGE sql AS 'SELECT $1 = $2'; CREATE OPERATOR === (LEFTARG = mood, RIGHTARG = mood, FUNCTION = mood_eq)", "only in b: operator public.==="),
        ("aggregate", "CREATE AGGREGATE mysum(integer) (SFUNC = int4pl, STYPE = integer)", "only in b: aggregate public.mysum"),
        ("tsconfig", "CREATE TEXT SEARCH CONFIGURATION tsc (COPY = simple)", "only in b: text search configuration public.tsc"),
        ("rule", "CREATE RULE r AS ON INSERT TO s2.other DO INSTEAD NOTHING", "only in b: rule r on s2.other"),
        ("foreign", "CREATE FOREIGN DATA WRAPPER w; CREATE SERVER srv FOREIGN DATA WRAPPER w; CREATE FOREIGN TABLE ft (x integer) SERVER srv", "only in b: foreign table public.ft"),
    ];
    for (name, change, named) in cases {
        let b = format!("{}{name}", p.prefix);
        sql("postgres", &format!("CREATE DATABASE {b} TEMPLATE {a}"));
        sql(&b, change);
        let run = diff(&p, &a, &b, &[]).verdict("schemas differ");
        assert!(run.stdout.contains(named), "{name}: {named:?} not named in:\n{}", run.stdout);
        assert!(run.stdout.contains("@@"), "{name}: a unified diff is shown");
    }
    // --schema restricts the comparison: the change is in public, not in s2.
    let b = format!("{}coltype", p.prefix);
    diff(&p, &a, &b, &["--schema", "s2"]).ok();
    diff(&p, &a, &b, &["--schema", "s2", "--schema", "public"]).verdict("schemas differ");
    // JSON for machines.
    let run = diff(&p, &a, &b, &["--format", "json"]);
    assert_eq!(run.code, 1);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["equal"], false);
    assert_eq!(json["changed"][0]["object"], "table public.child", "{json}");
    assert_eq!(json["changed"].as_array().unwrap().len(), 1, "{json}");
    // Which column, old → new, in JSON and in text.
    let column = &json["changed"][0]["inside"][0];
    assert_eq!(column["name"], "column id", "{json}");
    assert!(column["a"].as_str().unwrap().starts_with("integer"), "{json}");
    assert!(column["b"].as_str().unwrap().starts_with("bigint"), "{json}");
    let run = diff(&p, &a, &b, &[]).verdict("schemas differ");
    assert!(run.stdout.contains("changed: table public.child\n    column id: integer"), "{}", run.stdout);
}

/// What changed inside a table is named with its old and new definition: an index, a
/// constraint, a trigger, a policy and a column's default, in text and JSON.
#[test]
fn changes_inside_a_table_are_named_with_old_and_new() {
    let p = Project::new("sdinside");
    let a = create(&p, "a", BASE);
    let b = format!("{}b", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {b} TEMPLATE {a}"));
    sql(
        &b,
        "DROP INDEX child_n_idx; CREATE UNIQUE INDEX child_n_idx ON child (n, parent_id);
         ALTER TABLE child DROP CONSTRAINT child_parent_id_fkey;
         ALTER TABLE child ADD CONSTRAINT child_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES parent(id) ON DELETE SET NULL;
         DROP TRIGGER parent_touch ON parent;
         CREATE TRIGGER parent_touch BEFORE INSERT OR UPDATE ON parent FOR EACH ROW EXECUTE FUNCTION touch();
         DROP POLICY p_all ON parent; CREATE POLICY p_all ON parent USING (id > 1);
         CREATE INDEX parent_name_idx ON parent (lower(name));",
    );
    let run = diff(&p, &a, &b, &[]).verdict("schemas differ: 2 object(s) (2 changed, 0 only in b, 0 only in a)");
    for line in [
        "changed: table public.child\n",
        "    constraint child_parent_id_fkey: FOREIGN KEY (parent_id) REFERENCES public.parent(id) ON DELETE CASCADE → FOREIGN KEY (parent_id) REFERENCES public.parent(id) ON DELETE SET NULL\n",
        "    index child_n_idx: UNIQUE USING btree (n) → UNIQUE USING btree (n, parent_id)\n",
        "changed: table public.parent\n",
        "    index parent_name_idx: only in b (USING btree (lower(name)))\n",
        "    policy p_all: USING ((id > 0)) → USING ((id > 1))\n",
        "    trigger parent_touch: BEFORE INSERT ON public.parent",
    ] {
        assert!(run.stdout.contains(line), "{line:?} not in:\n{}", run.stdout);
    }
    let run = diff(&p, &a, &b, &["--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let parent = json["changed"].as_array().unwrap().iter().find(|c| c["object"] == "table public.parent").unwrap();
    let policy = parent["inside"].as_array().unwrap().iter().find(|e| e["name"] == "policy p_all").unwrap();
    assert_eq!((policy["a"].as_str(), policy["b"].as_str()), (Some("USING ((id > 0))"), Some("USING ((id > 1))")));
    let index = parent["inside"].as_array().unwrap().iter().find(|e| e["name"] == "index parent_name_idx").unwrap();
    assert!(index["a"].is_null() && index["b"] == "USING btree (lower(name))", "{index}");
}

/// The same extension at two versions on two databases is a difference (pg_dump writes no
/// version; the tool asks each database).
#[test]
fn an_upgraded_extension_is_a_difference() {
    let p = Project::new("sdext");
    // Side a also has an object whose name holds a line break and the marker between sides'
    // answers: it must not move a's extension versions to b.
    let a = create(
        &p,
        "old",
        "CREATE EXTENSION pg_trgm WITH VERSION '1.5'; CREATE TABLE t (x integer);
         ALTER TABLE t ADD CONSTRAINT U&\"x\\000A\\0002next side\\000Ay\" CHECK (x > 0) NOT VALID",
    );
    let b = create(&p, "new", "CREATE EXTENSION pg_trgm WITH VERSION '1.6'; CREATE TABLE t (x integer)");
    let run = diff(&p, &a, &b, &[]).verdict("schemas differ");
    assert!(
        run.stdout.contains("changed: extension pg_trgm\n    definition: CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public VERSION '1.5' → CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public VERSION '1.6'"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("next side y on t is NOT VALID"), "{}", run.stderr);
}

/// `… | head -1`: the reader leaves after one line; the tool ends quietly, never with a panic.
#[test]
fn a_reader_that_leaves_early_is_no_panic() {
    let p = Project::new("sdpipe");
    let a = create(&p, "few", "CREATE TABLE t0 (id int)");
    let many: String = (0..400).map(|i| format!("CREATE TABLE t{i} (id int, name text, n bigint);\n")).collect();
    let b = create(&p, "many", &many);
    let mut child = p
        .command(&p.dir, &["db", "schema-diff", "--a", &a, "--b", &b, "--max-lines", "100000"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    // The read end is closed here (the reader dropped).
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("changed: ") || first.starts_with("only in b: "), "{first}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        matches!(out.status.code(), Some(1) | Some(141)) || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}

fn run_as_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[test]
fn warnings_and_errors() {
    let p = Project::new("sderr");
    let a = create(&p, "a", "CREATE TABLE t (x integer); INSERT INTO t VALUES (-1); ALTER TABLE t ADD CONSTRAINT pos CHECK (x > 0) NOT VALID;");
    let run = diff(&p, &a, &a, &[]).ok();
    assert!(run.stderr.contains("NOT VALID"), "{}", run.stderr);
    // What is not compared is said, never silently equal.
    sql(
        &a,
        &format!(
            "CREATE SUBSCRIPTION {}sub CONNECTION 'dbname=nowhere' PUBLICATION nothing WITH (connect = false)",
            p.prefix
        ),
    );
    let run = diff(&p, &a, &a, &[]).ok();
    assert!(run.stderr.contains("1 subscription(s), not compared"), "{}", run.stderr);
    sql(&a, &format!("ALTER SUBSCRIPTION {}sub SET (slot_name = NONE); DROP SUBSCRIPTION {}sub", p.prefix, p.prefix));
    // Two databases of one server are asked in one psql, one after the other: each side's
    // problems are found, whatever its name (a quote, a space, a percent sign).
    let odd = format!("{}b' q%20", p.prefix);
    sql("postgres", &format!("CREATE DATABASE \"{odd}\""));
    sql(&odd, "CREATE TABLE u (x integer); INSERT INTO u VALUES (1), (1);");
    assert!(crate::support::try_sql(&odd, "CREATE UNIQUE INDEX CONCURRENTLY u_x ON u (x)").is_err());
    let run = diff(&p, &a, &odd, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("invalid index u_x"), "{}", run.stderr);
    assert!(run.stderr.contains("constraint pos on t is NOT VALID"), "{}", run.stderr);
    // Where a table lives (pg_dump --no-tablespaces) is not compared: said, with a count.
    let dir = std::env::temp_dir().join(format!("{}ts", p.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let owner = std::process::Command::new("id").args(["-u", "postgres"]).output().unwrap();
    if run_as_root() && owner.status.success() {
        let uid: u32 = String::from_utf8_lossy(&owner.stdout).trim().parse().unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), None).unwrap();
    }
    let ts = format!("{}ts", p.prefix);
    sql("postgres", &format!("CREATE TABLESPACE {ts} LOCATION '{}'", dir.display()));
    sql(
        &odd,
        &format!(
            "CREATE TABLE placed (x integer) TABLESPACE {ts}; CREATE INDEX placed_x ON placed (x) TABLESPACE {ts}"
        ),
    );
    let run = diff(&p, &a, &odd, &[]);
    let _ = crate::support::try_sql(&odd, "DROP TABLE placed");
    let _ = crate::support::try_sql("postgres", &format!("DROP TABLESPACE {ts}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        run.stderr.contains(&format!("2 relation(s) in tablespace(s) {ts}, placement not compared")),
        "{}",
        run.stderr
    );
    diff(&p, &a, &format!("{}missing", p.prefix), &[]).fails(2, "does not exist");
    diff(&p, "no/such/file.sql", &a, &[]).fails(2, "does not exist");
    let secret = format!("postgres://u:s3cret-pw@127.0.0.1:{}/db", crate::support::free_port());
    let run = diff(&p, &secret, &a, &[]);
    assert_eq!(run.code, 2);
    assert!(!run.all().contains("s3cret-pw"));
}

#[test]
fn fresh_and_generate_check() {
    let p = Project::new("sdgen");
    let fresh = p.xtask(&["db", "fresh"]).ok();
    assert_eq!(fresh.stdout.trim(), format!("{}fresh", p.prefix));
    assert_eq!(sql(&format!("{}fresh", p.prefix), "SELECT count(*) FROM _sqlx_migrations"), "10");

    p.xtask(&["db", "generate"]).ok();
    let snapshot = std::fs::read_to_string(p.dir.join("docs/schema.sql")).unwrap();
    assert!(snapshot.contains("CREATE TABLE crm.customers"), "{snapshot}");
    let doc = std::fs::read_to_string(p.dir.join("docs/database.md")).unwrap();
    assert!(doc.contains("crm.customers"), "{doc}");
    git(&p.dir, &["add", "-A"]);
    git(&p.dir, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "generated"]);
    p.xtask(&["db", "generate", "--check"]).ok();
    // The fresh database equals the committed snapshot.
    p.xtask(&["db", "schema-diff", "--a", &format!("{}fresh", p.prefix), "--b", "docs/schema.sql"]).ok();

    // A new migration without regenerating: the check fails and says what to run.
    std::fs::write(p.dir.join("migrations/0011_add_column.sql"), "ALTER TABLE crm.tags ADD COLUMN hint text;\n")
        .unwrap();
    let run = p.xtask(&["db", "generate", "--check"]).verdict("run `cargo xtask db generate`");
    assert!(run.stdout.contains("hint"), "{}", run.stdout);
    assert_eq!(git(&p.dir, &["status", "--porcelain", "docs"]), "", "--check writes nothing");
    // No temporary database is left behind.
    assert_eq!(p.databases(), vec![format!("{}fresh", p.prefix)]);
}

/// A side named like a connection string must never send DATABASE_URL's password anywhere else,
/// and a database really named so is compared safely when the name reaches us as data.
#[test]
fn a_side_that_looks_like_a_connection_string_reaches_no_other_server() {
    use std::io::Read;
    let p = Project::new("sdconn");
    let a = create(&p, "a", "CREATE TABLE t (id int);");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let hostile = format!("host=127.0.0.1 port={port} dbname=x");
    let run = diff(&p, &a, &hostile, &[]).fails(2, "connection string");
    assert!(!run.all().contains(&password()));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut got = Vec::new();
    while let Ok((mut conn, _)) = listener.accept() {
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap_or(0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.is_empty(), "the fake server was contacted: {:?}", String::from_utf8_lossy(&got));
    // A database whose name has `=` in it, given as a URL: compared, nothing else contacted.
    let odd = format!("{}host=127.0.0.1 port={port} dbname=x", p.prefix);
    sql("postgres", &format!("CREATE DATABASE \"{odd}\""));
    sql(&odd, "CREATE TABLE t (id int);");
    let url = url_for(&odd).replacen(&format!(":{}@", password()), "@", 1);
    p.xtask_in(&p.dir, &["db", "schema-diff", "--a", &a, "--b", &url], &[("PGPASSWORD", &password())]).ok();
    assert!(listener.accept().is_err(), "the fake server was contacted");
}

/// `db fresh` in two worktrees builds two databases: a gate in one never compares against what
/// the other just built. `fresh` names this worktree's; sides may be given without flags.
#[test]
fn two_worktrees_fresh_databases_do_not_collide() {
    let p = Project::new("sdfresh");
    let (a, b) = (crate::worktree::worktree(&p, "fresh-a"), crate::worktree::worktree(&p, "fresh-b"));
    let fa = p.xtask_in(&a, &["db", "fresh"], &[]).ok().stdout.trim().to_string();
    let fb = p.xtask_in(&b, &["db", "fresh"], &[]).ok().stdout.trim().to_string();
    assert_ne!(fa, fb);
    assert!(fa.starts_with(&format!("{}fresh_", p.prefix)), "{fa}");
    let dbs = p.databases();
    assert!(dbs.contains(&fa) && dbs.contains(&fb), "{dbs:?}");
    // Rebuilding one leaves the other as it was.
    sql(&fb, "CREATE TABLE only_in_b (x int)");
    p.xtask_in(&a, &["db", "fresh"], &[]).ok();
    assert_eq!(sql(&fb, "SELECT to_regclass('only_in_b') IS NOT NULL"), "t");
    // Positional sides and the word `fresh`.
    let run = p.xtask_in(&a, &["db", "schema-diff", "fresh", &fb], &[]).verdict("schemas differ");
    assert!(run.stdout.contains("only in b: table public.only_in_b"), "{}", run.stdout);
    p.xtask_in(&a, &["db", "schema-diff", "--a", "fresh", "--b", &fa], &[]).ok();
    p.xtask_in(&a, &["db", "schema-diff", "fresh"], &[]).fails(2, "fewer");
}

/// A newer pg_dump (18) against this server: its dump of a database compares equal to the
/// snapshot the server's own pg_dump wrote (`cargo xtask test` gives the 18 programs' directory).
#[test]
fn a_newer_pg_dump_against_this_server_compares_equal() {
    let bindir = std::env::var_os("XTASK_TEST_PG18_BINDIR")
        .expect("run through `cargo xtask test`, which sets XTASK_TEST_PG18_BINDIR");
    let p = Project::new("sdnewer");
    let a = create(&p, "base", BASE);
    let file = p.dir.join("base.sql");
    let url = crate::support::url_for(&a).replacen(&format!(":{}@", crate::support::password()), "@", 1);
    let out = std::process::Command::new("pg_dump")
        .args(["-s", "-d", &url])
        .env("PGPASSWORD", crate::support::password())
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&file, &out.stdout).unwrap();
    let bindir = bindir.to_string_lossy().into_owned();
    let run =
        p.xtask_in(&p.dir, &["db", "schema-diff", &a, file.to_str().unwrap()], &[("XTASK_PG_BINDIR", &bindir)]).ok();
    assert!(run.stderr.contains("pg_dump 18."), "{}", run.stderr);
}

/// What a team accepts as noise is left out, by the config key and by the flag, and said.
#[test]
fn ignored_objects_are_not_compared_and_are_counted() {
    let p = Project::new("sdignore");
    let a = create(&p, "plain", "CREATE TABLE t (id int)");
    let b = create(&p, "noisy", "CREATE TABLE t (id int); CREATE SCHEMA tiger; CREATE TABLE tiger.addr (x int); CREATE TABLE public.spatial_ref_sys (srid int)");
    diff(&p, &a, &b, &[]).verdict("schemas differ");
    let manifest = std::fs::read_to_string(p.dir.join("Cargo.toml")).unwrap();
    std::fs::write(
        p.dir.join("Cargo.toml"),
        format!("{manifest}\n[workspace.metadata.db.schema_diff]\nignore = [\"* tiger.*\", \"schema tiger\"]\n"),
    )
    .unwrap();
    let run = diff(&p, &a, &b, &[]).verdict("schemas differ");
    assert!(run.stdout.contains("spatial_ref_sys") && !run.stdout.contains("tiger"), "{}", run.stdout);
    let run = diff(&p, &a, &b, &["--ignore", "table public.spatial_ref_sys"]).ok();
    assert!(run.stderr.contains("ignored (schema_diff.ignore, --ignore): 0 statement(s)"), "{}", run.stderr);
    assert!(run.stderr.contains("and 3 of"), "{}", run.stderr);
}
