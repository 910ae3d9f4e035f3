//! What a migration's statements are to sqlx and to the server, read from their text: sqlx's
//! `-- no-transaction` marker, the statements that refuse a transaction block or depend on one,
//! transaction control, and what is never sent (a statement naming another database, `COPY …
//! FROM STDIN`, `DROP TABLESPACE`).

use crate::sql::{self, Statement};

/// sqlx's `-- no-transaction` marker: the file's first line.
pub fn no_transaction(text: &str) -> bool {
    text.starts_with("-- no-transaction")
}

/// Statements that refuse a transaction block: a `-- no-transaction` migration of one of these
/// runs on its own, traced from a second session. Any other statement alone is its own
/// transaction either way, so it is traced from inside one.
pub fn refuses_transaction(stmt: &Statement) -> bool {
    let k = stmt.keywords(4);
    let text = sql::strip_comments(&stmt.sql).to_ascii_uppercase();
    let concurrently =
        text.split_whitespace().any(|w| w == "CONCURRENTLY") && !k.starts_with("REFRESH MATERIALIZED VIEW");
    concurrently
        || k.starts_with("VACUUM")
        || k.starts_with("CREATE DATABASE")
        || k.starts_with("DROP DATABASE")
        || k.starts_with("ALTER SYSTEM")
        || k.starts_with("CREATE TABLESPACE")
        || k.starts_with("DROP TABLESPACE")
        || k == "CLUSTER"
}

/// Statements whose meaning depends on whether a transaction block is open: a `DO` or `CALL`
/// that commits, `LOCK` and `DECLARE` (which need one), transaction control. Alone in a
/// `-- no-transaction` migration, sqlx runs them outside any block: so are they run here.
pub fn depends_on_the_block(stmt: &Statement) -> bool {
    let k = stmt.keywords(1);
    refuses_transaction(stmt) || controls_transaction(stmt) || matches!(k.as_str(), "DO" | "CALL" | "LOCK" | "DECLARE")
}

/// Savepoints need a transaction block: in the implicit transaction of a `-- no-transaction`
/// migration's several statements the server refuses them (until the file's own BEGIN).
pub fn needs_an_explicit_block(stmt: &Statement) -> bool {
    let k = stmt.keywords(2);
    k.starts_with("SAVEPOINT") || k.starts_with("RELEASE") || k.starts_with("ROLLBACK TO")
}

/// The database a statement names, when it is not one it creates: `ALTER`/`DROP`/`COMMENT ON
/// DATABASE x`, `GRANT`/`REVOKE … ON DATABASE x`, `SECURITY LABEL … ON DATABASE x`, `ALTER
/// ROLE … IN DATABASE x`. On this server that database is not the one being migrated (on
/// production, whatever carries that name): the statement is refused before it runs.
pub fn names_another_database(stmt: &Statement) -> Option<String> {
    let words = words(&sql::strip_comments(&stmt.sql));
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let at = |phrase: &[&str]| upper.windows(phrase.len()).position(|w| w == phrase).map(|i| i + phrase.len());
    let first = |n: usize| upper.iter().take(n).map(String::as_str).collect::<Vec<_>>().join(" ");
    let after = match first(2).as_str() {
        "ALTER DATABASE" | "DROP DATABASE" => Some(2),
        "COMMENT ON" if first(3) == "COMMENT ON DATABASE" => Some(3),
        "ALTER ROLE" | "ALTER USER" => at(&["IN", "DATABASE"]),
        _ if matches!(upper.first().map(String::as_str), Some("GRANT" | "REVOKE")) => at(&["ON", "DATABASE"]),
        "SECURITY LABEL" => at(&["ON", "DATABASE"]),
        _ => None,
    }?;
    let mut rest = words.iter().skip(after).map(String::as_str);
    let mut name = rest.next()?;
    if name.eq_ignore_ascii_case("IF") {
        name = rest.nth(1)?;
    }
    Some(name.to_string())
}

/// The words of SQL text: quoted identifiers and strings whole, punctuation apart.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let mut w = c.to_string();
                while let Some(d) = chars.next() {
                    w.push(d);
                    if d == c {
                        if chars.peek() == Some(&c) {
                            w.push(chars.next().unwrap_or(c));
                        } else {
                            break;
                        }
                    }
                }
                out.push(w);
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut w = c.to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '$' {
                        w.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(w);
            }
            c if c.is_whitespace() => {}
            c => out.push(c.to_string()),
        }
    }
    out
}

/// Transaction control inside a migration: sqlx has already opened the migration's
/// transaction, so a COMMIT here commits part of it.
pub fn controls_transaction(stmt: &Statement) -> bool {
    let k = stmt.keywords(2);
    ["BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "START TRANSACTION", "SAVEPOINT", "RELEASE", "PREPARE TRANSACTION"]
        .iter()
        .any(|w| k == *w || k.starts_with(&format!("{w} ")))
}

/// What is not run: what sqlx would fail on before the server runs anything of the statement
/// (`COPY … FROM STDIN`, whose data psql would read from its own input), and a statement naming
/// another database: `(sqlstate, message)`.
pub fn unsendable(stmt: &Statement) -> Option<(String, String)> {
    if stmt.keywords(2) == "DROP TABLESPACE" {
        return Some((
            "refused".into(),
            "refused before it ran: DROP TABLESPACE removes a tablespace of the whole server, which a rehearsal could not bring back — drop it by hand, outside the migrations".into(),
        ));
    }
    if let Some(db) = names_another_database(stmt) {
        return Some((
            "refused".into(),
            format!(
                "refused before it ran: it names the database {db}, which on this server is not the database being migrated (on production: whatever database has that name) — act on the migrated database through current_database(), e.g. DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET …', current_database()); END$$"
            ),
        ));
    }
    let k = stmt.keywords(8);
    let text = sql::strip_comments(&stmt.sql).to_ascii_uppercase();
    if k.starts_with("COPY") && text.split_whitespace().any(|w| w == "STDIN") {
        return Some((
            "0A000".into(),
            "COPY … FROM STDIN needs data the migrator does not send: load data with INSERT … SELECT, or COPY FROM a server-side file".into(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_transaction_is_sqlx_s_first_line() {
        assert!(no_transaction("-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (c);"));
        assert!(!no_transaction("CREATE INDEX i ON t (c);\n-- no-transaction"));
    }

    #[test]
    fn what_cannot_be_sent_or_run_in_a_transaction_is_known() {
        let st = |sql: &str| Statement { sql: sql.into(), line: 1, meta: false };
        assert!(refuses_transaction(&st("CREATE INDEX CONCURRENTLY i ON t (c)")));
        assert!(refuses_transaction(&st("VACUUM t")));
        assert!(!refuses_transaction(&st("REFRESH MATERIALIZED VIEW CONCURRENTLY m")));
        assert!(!refuses_transaction(&st("ALTER TABLE t ADD COLUMN c int")));
        assert!(
            controls_transaction(&st("COMMIT"))
                && controls_transaction(&st("begin"))
                && !controls_transaction(&st("BEGINNER"))
        );
        assert!(unsendable(&st("COPY t FROM STDIN")).is_some());
        assert!(unsendable(&st("COPY t TO STDOUT")).is_none());
        assert!(depends_on_the_block(&st("do $$BEGIN COMMIT; END$$")) && depends_on_the_block(&st("LOCK t")));
        assert!(!depends_on_the_block(&st("ALTER TABLE t ADD COLUMN c int")));
        assert!(needs_an_explicit_block(&st("ROLLBACK TO SAVEPOINT a")) && !needs_an_explicit_block(&st("ROLLBACK")));
    }

    #[test]
    fn statements_naming_another_database_are_known() {
        let st = |sql: &str| Statement { sql: sql.into(), line: 1, meta: false };
        let named = |sql: &str| names_another_database(&st(sql));
        assert_eq!(named("ALTER DATABASE app_prod_clone SET work_mem = '64MB'").as_deref(), Some("app_prod_clone"));
        assert_eq!(named("alter database \"My Db\" rename to x").as_deref(), Some("\"My Db\""));
        assert_eq!(named("DROP DATABASE IF EXISTS legacy").as_deref(), Some("legacy"));
        assert_eq!(named("COMMENT ON DATABASE app IS 'x'").as_deref(), Some("app"));
        assert_eq!(named("GRANT CONNECT, TEMP ON DATABASE app TO r").as_deref(), Some("app"));
        assert_eq!(named("REVOKE ALL ON DATABASE app FROM PUBLIC").as_deref(), Some("app"));
        assert_eq!(named("ALTER ROLE r IN DATABASE app SET search_path = x").as_deref(), Some("app"));
        assert_eq!(named("ALTER ROLE r SET search_path = x"), None);
        assert_eq!(named("GRANT SELECT ON TABLE database TO r"), None);
        assert_eq!(named("COMMENT ON TABLE t IS 'ALTER DATABASE x'"), None);
        assert_eq!(named("CREATE DATABASE scratch"), None);
    }
}
