//! The app's migrations build a schema rich enough to exercise the tooling (issue: foundation).

use crate::support::{sql, url_for, Project};

#[test]
fn a_fresh_database_has_what_the_tooling_needs() {
    let p = Project::new("schema");
    let db = format!("{}fresh", p.prefix);
    sql("postgres", &format!("CREATE DATABASE {db}"));
    let url = url_for(&db);
    p.xtask_in(&p.dir, &["db", "migrate"], &[("DATABASE_URL", &url)]).ok();
    let one = |q: &str| sql(&db, q);
    let user_schemas = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'";

    let tables: i64 = one(&format!("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p') AND {user_schemas} AND c.relname <> '_sqlx_migrations'")).parse().unwrap();
    assert!(tables >= 10, "{tables} tables");
    let schemas: i64 = one(&format!("SELECT count(DISTINCT n.nspname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND {user_schemas} AND n.nspname <> 'public'")).parse().unwrap();
    assert!(schemas >= 2, "{schemas} non-public schemas with tables");
    let fk_actions = one("SELECT string_agg(DISTINCT confdeltype::text, '' ORDER BY confdeltype::text) FROM pg_constraint WHERE contype = 'f'");
    for action in ['c', 'n', 'r'] {
        assert!(
            fk_actions.contains(action),
            "ON DELETE actions present: {fk_actions} (c=cascade, n=set null, r=restrict)"
        );
    }
    let count = |q: &str| one(q).parse::<i64>().unwrap();
    assert!(count("SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype = 'e' AND n.nspname <> 'pg_catalog'") >= 1, "an enum");
    assert!(count("SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype = 'd' AND n.nspname NOT IN ('pg_catalog', 'information_schema')") + count("SELECT count(*) FROM pg_constraint WHERE contype = 'c'") >= 2, "a domain or CHECK constraints");
    assert!(
        count("SELECT count(*) FROM pg_views WHERE schemaname NOT IN ('pg_catalog', 'information_schema')") >= 1,
        "a view"
    );
    assert!(count("SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_language l ON l.oid = p.prolang WHERE NOT t.tgisinternal AND l.lanname = 'plpgsql'") >= 1, "a plpgsql trigger function in use");
    assert!(count("SELECT count(*) FROM pg_index WHERE indpred IS NOT NULL") >= 1, "a partial index");
    assert!(count("SELECT count(*) FROM pg_index i WHERE i.indisunique AND NOT i.indisprimary") >= 1, "a unique index");
    assert!(
        count("SELECT count(*) FROM pg_attribute WHERE attidentity <> '' AND attnum > 0") >= 1,
        "an identity column"
    );
    assert!(count("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog')") >= 1, "a sequence");
    assert!(count("SELECT count(*) FROM information_schema.columns WHERE data_type = 'jsonb' AND table_schema NOT IN ('pg_catalog', 'information_schema')") >= 1, "jsonb");
    assert!(count("SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'") >= 1, "an extension");
    let migrations: i64 = one("SELECT count(*) FROM _sqlx_migrations").parse().unwrap();
    assert!(migrations >= 8, "{migrations} migrations");
}
