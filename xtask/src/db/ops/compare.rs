//! Do two schemas match? The comparison of `db schema-diff` and of `db rehearse`'s gate.
//!
//! Fast by construction: no admin connection at all. Each side's `pg_dump --schema-only` and its
//! hidden-problems query run at once, both sides in parallel; the server and pg_dump versions are
//! read from the dump's own header, and a missing database shows up as pg_dump's error.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Ctx;
use crate::error::fail;
use crate::pg::{classify, client, tools, PgUrl};
use crate::proc;
use crate::schema::{self, Options};

/// One side of the comparison.
enum Source {
    /// A database; the URL names it.
    Database(PgUrl),
    File(PathBuf),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Database(url) => {
                format!("database `{}` on {}", url.dbname().unwrap_or_default(), url.server_label())
            }
            Source::File(p) => format!("file {}", p.display()),
        }
    }
    fn short(&self) -> String {
        match self {
            Source::Database(url) => url.dbname().unwrap_or_default().to_string(),
            Source::File(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }
}

/// What one side yields: its text.
struct Side {
    text: String,
}

/// What a comparison found.
pub struct Outcome {
    pub equal: bool,
    pub a: String,
    pub b: String,
    pub difference: schema::Difference,
    pub warnings: Vec<String>,
    /// The canonical forms, as written to `dump/schema-diff/`.
    pub files: (PathBuf, PathBuf),
    /// The two canonical forms' text.
    pub rendered: (String, String),
    pub statements: usize,
}

impl Outcome {
    /// `schemas differ: N object(s) (…)`.
    pub fn summary(&self) -> String {
        let d = &self.difference;
        let n = d.changed.len() + d.only_in_b.len() + d.only_in_a.len();
        format!(
            "schemas differ: {n} object(s) ({} changed, {} only in b, {} only in a)",
            d.changed.len(),
            d.only_in_b.len(),
            d.only_in_a.len()
        )
    }

    /// The objects that differ, a line each (members of a changed table indented under it).
    pub fn lines(&self) -> Vec<String> {
        let d = &self.difference;
        let mut out = Vec::new();
        for c in &d.changed {
            out.push(format!("changed: {}", c.object));
            for element in &c.inside {
                out.push(format!("    {element}"));
            }
        }
        for (what, keys) in [("only in b", &d.only_in_b), ("only in a", &d.only_in_a)] {
            for k in keys {
                out.push(format!("{what}: {k}"));
            }
        }
        if !self.equal && d.is_empty() {
            out.push(
                "changed: the order of columns (compared with --strict-column-order) or of statements within an object"
                    .into(),
            );
        }
        out
    }
}

/// What to compare: two sides (a database name, `fresh`, a URL or a `.sql` file) and how.
pub struct Compare<'a> {
    pub a: &'a str,
    pub b: &'a str,
    /// Only these schemas (all when empty).
    pub schemas: &'a [String],
    /// Objects left out, beside the configuration's `schema_diff.ignore`.
    pub ignore: &'a [String],
    pub options: Options,
}

/// Dumps both sides at once and compares their canonical forms (written to `dump/schema-diff/`).
pub fn compare(ctx: &Ctx, what: &Compare) -> Result<Outcome> {
    let opts = what.options;
    let (spec_a, spec_b) = (what.a, what.b);
    let (a, b) = (source(ctx, spec_a)?, source(ctx, spec_b)?);
    let tools = Tools { pg_dump: tools::find("pg_dump")?, psql: tools::find("psql")? };

    // Both dumps and both sides' hidden-problems queries at once: one psql for both when they
    // share a server and credentials (the usual case; a process fewer competing with the dumps).
    let (sa, sb, problems) = std::thread::scope(|s| {
        let ha = s.spawn(|| fetch(&a, &tools, what.schemas, opts));
        let hb = s.spawn(|| fetch(&b, &tools, what.schemas, opts));
        let problems = match (&a, &b) {
            (Source::Database(x), Source::Database(y)) if x.with_dbname("") == y.with_dbname("") => {
                hidden_problems(&tools, &[&a, &b])
            }
            _ => {
                let qb = s.spawn(|| hidden_problems(&tools, &[&b]));
                let wa = hidden_problems(&tools, &[&a]);
                wa.and_then(|(mut w, mut v)| {
                    let (more, more_v) = qb.join().expect("side thread")?;
                    w.extend(more);
                    v.extend(more_v);
                    Ok((w, v))
                })
            }
        };
        (ha.join().expect("side thread"), hb.join().expect("side thread"), problems)
    });
    let (mut sa, mut sb) = (sa.map_err(|e| own_word(ctx, spec_a, e))?, sb.map_err(|e| own_word(ctx, spec_b, e))?);
    let (warnings, versions) = problems?;
    if let [Some(va), Some(vb)] = versions.as_slice() {
        sa.text = with_extension_versions(&sa.text, va);
        sb.text = with_extension_versions(&sb.text, vb);
    }

    // Versions, from the dumps' headers: deparsed SQL differs between majors.
    let (va, vb) = (dumped_from(&sa.text), dumped_from(&sb.text));
    for (side, v) in [(&a, &va), (&b, &vb)] {
        if let Some(v) = v {
            eprintln!("{}: PostgreSQL {v}", side.label());
        }
    }
    if let Some(v) =
        sa.text.lines().chain(sb.text.lines()).find_map(|l| l.strip_prefix("-- Dumped by pg_dump version "))
    {
        eprintln!("pg_dump {v}");
    }
    if let (Source::Database(_), Source::Database(_), Some(x), Some(y)) = (&a, &b, &va, &vb) {
        if major(x) != major(y) {
            return Err(fail(
                format!("the servers' major versions differ ({x} and {y}): their dumps are not comparable"),
                "compare databases on servers of the same major version (dump one, restore it next to the other)",
            ));
        }
    }

    let ignore: Vec<String> = ctx.config.schema_diff.ignore.iter().chain(what.ignore).cloned().collect();
    let (ca, ignored_a) = schema::without_ignored(schema::canonical(&sa.text, opts), &ignore);
    let (cb, ignored_b) = schema::without_ignored(schema::canonical(&sb.text, opts), &ignore);
    if ignored_a + ignored_b > 0 {
        eprintln!(
            "ignored (schema_diff.ignore, --ignore): {ignored_a} statement(s) of {} and {ignored_b} of {}",
            a.label(),
            b.label()
        );
    }
    let (ra, rb) = (schema::render(&ca), schema::render(&cb));
    let dir = ctx.config.root.join("dump/schema-diff");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (fa, fb) = (dir.join(format!("a.{}.sql", a.short())), dir.join(format!("b.{}.sql", b.short())));
    std::fs::write(&fa, &ra)?;
    std::fs::write(&fb, &rb)?;

    let equal = ra == rb;
    let difference = if equal { schema::Difference::default() } else { schema::compare(&ca, &cb) };
    Ok(Outcome {
        equal,
        a: a.label(),
        b: b.label(),
        difference,
        warnings,
        files: (fa, fb),
        rendered: (ra, rb),
        statements: ca.len(),
    })
}

struct Tools {
    pg_dump: PathBuf,
    psql: PathBuf,
}

/// `postgres://…` (any server), a `.sql` file, or a database on DATABASE_URL's server.
fn source(ctx: &Ctx, spec: &str) -> Result<Source> {
    // Words for this worktree's own databases (a database literally named so: give its URL).
    if spec == "fresh" || spec == "current" {
        let (url, _) = ctx.database_url()?;
        if spec == "fresh" {
            return Ok(Source::Database(url.with_dbname(&ctx.fresh_db())));
        }
        if url.dbname().is_none() {
            return Err(fail(
                "DATABASE_URL names no database: there is no `current` one",
                "end it with the database name",
            ));
        }
        return Ok(Source::Database(url));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let url = PgUrl::parse(spec).map_err(|e| {
            let shown = PgUrl::parse(spec).map(|u| u.redacted()).unwrap_or_else(|_| "(unparsable URL)".into());
            fail(
                format!("`{shown}` is not a valid PostgreSQL URL: {e:#}"),
                "write it as postgres://user@host:5432/database",
            )
        })?;
        if url.dbname().is_none() {
            return Err(fail(format!("`{}` names no database", url.redacted()), "end the URL with the database name"));
        }
        return Ok(Source::Database(url));
    }
    let path = Path::new(spec);
    if spec.ends_with(".sql") || path.is_file() || spec.contains('/') {
        let path = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
        if !path.is_file() {
            return Err(fail(
                format!("schema file {} does not exist", path.display()),
                "give a database name, a postgres:// URL, or the path of a .sql schema file",
            ));
        }
        return Ok(Source::File(path));
    }
    // `host=… dbname=…` is a libpq connection string, not a database name: taken as a name on
    // DATABASE_URL's server it would be safe (the name travels in the URL's path), but it is
    // almost surely meant as a server of its own — with credentials of its own.
    if spec.contains('=') {
        return Err(fail(
            format!("`{spec}` looks like a libpq connection string; a side is a database name on DATABASE_URL's server, a postgres:// URL, or a .sql file"),
            "write it as postgres://user@host:port/database (its own credentials: PGPASSWORD or ~/.pgpass, never DATABASE_URL's)",
        ));
    }
    let (url, _) = ctx.database_url()?;
    Ok(Source::Database(url.with_dbname(spec)))
}

/// One side's text: a file's, or the database's schema-only dump.
fn fetch(side: &Source, tools: &Tools, schemas: &[String], opts: Options) -> Result<Side> {
    let url = match side {
        Source::File(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            return Ok(Side { text });
        }
        Source::Database(url) => url,
    };
    let db = url.dbname().unwrap_or_default();
    let mut args: Vec<String> = client::SCHEMA_ONLY.iter().map(|a| a.to_string()).collect();
    if !opts.with_privileges {
        args.push("--no-privileges".into());
    }
    args.extend(schemas.iter().map(|s| format!("--schema={s}")));
    let mut dump = client::command(&tools.pg_dump, &args, url, &[])?;
    let text = proc::capture(&mut dump, None)
        .map_err(|e| explain(e, url, db))
        .with_context(|| format!("dumping the schema of `{db}`"))?;
    Ok(Side { text })
}

/// Per side: the installed extensions and their versions (`None` for a file side).
type ExtensionVersions = Vec<Option<Vec<(String, String)>>>;

/// Runs [`HIDDEN_PROBLEMS`] and [`EXTENSION_VERSIONS`] on the database `sides`, in one `psql`
/// connected by each side's own URL in turn (the database name percent-encoded in the path, where
/// libpq never reads it as connection parameters): give it several sides only when they share a
/// server and credentials, which the process's environment carries. Never `\c NAME`: psql takes
/// a NAME containing `=` as a connection string — with this side's password in the environment,
/// for any host it names. A URL (`\connect postgresql://…`) is parsed as a URL.
fn hidden_problems(tools: &Tools, sides: &[&Source]) -> Result<(Vec<String>, ExtensionVersions)> {
    const NEXT: &str = "\u{2}next side";
    let urls: Vec<Option<&PgUrl>> =
        sides.iter().map(|s| if let Source::Database(url) = s { Some(url) } else { None }).collect();
    let mut versions: ExtensionVersions = urls.iter().map(|u| u.map(|_| Vec::new())).collect();
    let mut out = Vec::new();
    let Some(first) = urls.iter().flatten().next() else { return Ok((out, versions)) };
    let mut script = String::new();
    for (i, url) in urls.iter().flatten().enumerate() {
        if i > 0 {
            script.push_str(&format!("\\echo '{NEXT}'\n\\connect {}\n", crate::pg::meta_arg(&url.without_secrets())));
        }
        script.push_str(&format!("{HIDDEN_PROBLEMS}\n{EXTENSION_VERSIONS}\n"));
    }
    // -w: never a password prompt (a side whose password the environment lacks fails instead).
    let mut query = client::command(&tools.psql, &["-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"], first, &[])?;
    // A database the dump cannot reach fails there with the better message: here, what was
    // printed before the failure is kept, and no side's extension versions are used.
    let (status, text, _) = proc::output(&mut query, Some(script.as_bytes()))?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let sides_asked = urls.iter().flatten().count();
    if !status.success() || lines.iter().filter(|l| **l == NEXT).count() + 1 != sides_asked {
        versions.iter_mut().for_each(|v| *v = None);
    }
    let mut slots = versions.iter_mut().flatten();
    let mut found = slots.next();
    for line in lines {
        if line == NEXT {
            found = slots.next();
            continue;
        }
        match line.strip_prefix("\u{1}extension\t").and_then(|l| l.split_once('\t')) {
            Some((name, version)) => found.iter_mut().for_each(|f| f.push((name.to_string(), version.to_string()))),
            None => out.push(line.to_string()),
        }
    }
    Ok((out, versions))
}

/// Installed extensions and their versions: `pg_dump` writes `CREATE EXTENSION` without one.
const EXTENSION_VERSIONS: &str =
    "SELECT E'\\x01extension\\t' || translate(extname || E'\\t' || extversion, E'\\n\\r\\x01\\x02', '    ') \
     FROM pg_extension ORDER BY extname;";

/// Writes each extension's version into its `CREATE EXTENSION` statement (as `VERSION '…'`), so
/// that an upgraded extension is a difference. Only when both sides are databases: a `.sql` file
/// (a committed snapshot) carries no versions, and comparing against one must not differ by that.
fn with_extension_versions(text: &str, versions: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let named = body
            .strip_prefix("CREATE EXTENSION IF NOT EXISTS ")
            .and_then(|rest| rest.strip_suffix(';').map(|r| (rest, r)))
            .and_then(|(_, r)| {
                let name = r.split(' ').next()?;
                let bare = name.trim_matches('"');
                versions.iter().find(|(n, _)| n == bare).map(|(_, v)| (r.to_string(), v.clone()))
            });
        match named {
            Some((stmt, version)) => {
                out.push_str(&format!(
                    "CREATE EXTENSION IF NOT EXISTS {stmt} VERSION {};",
                    crate::pg::literal(&version)
                ));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// What a schema-only dump does not show but a migration reviewer needs to know. One line each:
/// line breaks and the control characters this tool's output markers use are taken out of the
/// names, so no object name can forge a marker or a line of another side.
const HIDDEN_PROBLEMS: &str = "SELECT translate(problem, E'\\n\\r\\x01\\x02', '    ') FROM ( \
    SELECT format('`%s`: invalid index %s (a failed CREATE INDEX CONCURRENTLY?): pg_dump omits it', \
    current_database(), i.indexrelid::regclass) FROM pg_index i WHERE NOT i.indisvalid \
    UNION ALL SELECT format('`%s`: constraint %s on %s is NOT VALID (existing rows are not checked)', \
    current_database(), c.conname, c.conrelid::regclass) FROM pg_constraint c WHERE NOT c.convalidated AND c.conrelid <> 0 \
    UNION ALL SELECT format('`%s`: %s subscription(s), not compared (their connection strings hold credentials)', \
    current_database(), count(*)) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid \
    WHERE d.datname = current_database() HAVING count(*) > 0 \
    UNION ALL SELECT format('`%s`: %s security label(s), not compared', current_database(), count(*)) \
    FROM pg_seclabel HAVING count(*) > 0 \
    UNION ALL SELECT format('`%s`: %s relation(s) in tablespace(s) %s, placement not compared', current_database(), \
    count(*), string_agg(DISTINCT t.spcname, ', ')) FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace \
    WHERE NOT c.relisshared AND c.relnamespace <> 'pg_toast'::regnamespace HAVING count(*) > 0 \
    ) p(problem) ORDER BY 1;";

/// A side named `fresh` or `current` whose database does not exist: the fix is the verb that
/// makes it, not the template's.
fn own_word(ctx: &Ctx, spec: &str, err: anyhow::Error) -> anyhow::Error {
    if !format!("{err:#}").contains("does not exist") {
        return err;
    }
    match spec {
        "fresh" => fail(
            format!("this worktree's fresh database `{}` does not exist yet", ctx.fresh_db()),
            "build it with `cargo xtask db fresh`, then run again",
        ),
        "current" => fail(
            "the database DATABASE_URL names (`current`) does not exist",
            "give this worktree its database with `cargo xtask db worktree`, or fix DATABASE_URL",
        ),
        _ => err,
    }
}

/// pg_dump's failures, in the words of the fix.
fn explain(err: anyhow::Error, url: &PgUrl, db: &str) -> anyhow::Error {
    let text = format!("{err:#}");
    if text.contains("server version mismatch") {
        return fail(
            format!("pg_dump is older than the server of `{db}`: {}", crate::error::telling_line(&text)),
            "install the server's version of the PostgreSQL client programs and put them first on PATH (or set XTASK_PG_BINDIR)",
        );
    }
    classify(err, url, db)
}

/// `15.18 (Debian …)` from `-- Dumped from database version …`.
fn dumped_from(text: &str) -> Option<String> {
    text.lines().take(40).find_map(|l| l.strip_prefix("-- Dumped from database version ")).map(str::to_string)
}

fn major(version: &str) -> &str {
    version.split(['.', ' ']).next().unwrap_or(version)
}

#[cfg(test)]
mod tests {
    #[test]
    fn extension_versions_go_into_their_create_statements() {
        let text = "SET x = 1;\nCREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;\nCREATE EXTENSION IF NOT EXISTS \"uuid-ossp\" WITH SCHEMA public;\nCREATE TABLE t ();\n";
        let v = vec![("pg_trgm".to_string(), "1.6".to_string()), ("uuid-ossp".to_string(), "1.1".to_string())];
        assert_eq!(
            super::with_extension_versions(text, &v),
            "SET x = 1;\nCREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public VERSION '1.6';\nCREATE EXTENSION IF NOT EXISTS \"uuid-ossp\" WITH SCHEMA public VERSION '1.1';\nCREATE TABLE t ();\n"
        );
    }
}
