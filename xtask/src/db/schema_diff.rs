//! `db schema-diff --a A --b B`: do two schemas match? Exit 0 equal, 1 different, 2 error.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::error::{fail, Verdict};
use crate::flags::{DiffFormat, SchemaDiff};
use crate::pg::{PgUrl, Server};
use crate::schema::{self, Options};
use crate::{proc, time};

/// One side of the comparison.
enum Source {
    Database { server: Box<Server>, db: String },
    File(PathBuf),
}

impl Source {
    fn label(&self) -> String {
        match self {
            Source::Database { server, db } => format!("database `{db}` on {}", server.url.server_label()),
            Source::File(p) => format!("file {}", p.display()),
        }
    }
    fn short(&self) -> String {
        match self {
            Source::Database { db, .. } => db.clone(),
            Source::File(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    equal: bool,
    a: String,
    b: String,
    #[serde(flatten)]
    difference: &'a schema::Difference,
    warnings: &'a [String],
}

pub fn run(ctx: &Ctx, flags: SchemaDiff) -> Result<()> {
    let started = std::time::Instant::now();
    let opts = Options { with_privileges: flags.with_privileges, strict_column_order: flags.strict_column_order };
    let a = source(ctx, &flags.a)?;
    let b = source(ctx, &flags.b)?;

    // Versions: deparsed SQL differs between majors, so both servers must agree.
    let mut warnings = Vec::new();
    let mut pg_dump_version = None;
    for side in [&a, &b] {
        if let Source::Database { server, db } = side {
            eprintln!("{}: PostgreSQL {}", side.label(), server.version);
            pg_dump_version.get_or_insert(crate::pg::tools::major_version(server.pg_dump()?)?);
            warnings.extend(hidden_problems(server, db)?);
        }
    }
    if let (Source::Database { server: sa, .. }, Source::Database { server: sb, .. }) = (&a, &b) {
        if sa.major != sb.major {
            return Err(fail(
                format!(
                    "the servers' major versions differ ({} and {}): their dumps are not comparable",
                    sa.major, sb.major
                ),
                "compare databases on servers of the same major version (dump one, restore it next to the other)",
            ));
        }
    }
    if let Some(v) = pg_dump_version {
        eprintln!("pg_dump {v}");
    }

    // Both dumps at once (the commands are built here; only they cross into the threads).
    let (ja, jb) = (job(&a, &flags.schema, opts)?, job(&b, &flags.schema, opts)?);
    let (ta, tb) = std::thread::scope(|s| {
        let ha = s.spawn(move || ja.run());
        let hb = s.spawn(move || jb.run());
        (ha.join().expect("dump thread"), hb.join().expect("dump thread"))
    });
    let (ta, tb) = (ta?, tb?);
    let (ca, cb) = (schema::canonical(&ta, opts), schema::canonical(&tb, opts));
    let (ra, rb) = (schema::render(&ca), schema::render(&cb));

    let dir = ctx.config.root.join("dump/schema-diff");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (fa, fb) = (dir.join(format!("a.{}.sql", a.short())), dir.join(format!("b.{}.sql", b.short())));
    std::fs::write(&fa, &ra)?;
    std::fs::write(&fb, &rb)?;

    let difference = schema::compare(&ca, &cb);
    let equal = ra == rb;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    match flags.format {
        DiffFormat::Json => {
            let report = JsonReport { equal, a: a.label(), b: b.label(), difference: &difference, warnings: &warnings };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        DiffFormat::Text if !equal => {
            for (what, keys) in
                [("changed", &difference.changed), ("only in b", &difference.added), ("only in a", &difference.removed)]
            {
                for k in keys {
                    println!("{what}: {k}");
                }
            }
            if difference.is_empty() {
                println!("changed: the order of columns (compared with --strict-column-order) or of statements within an object");
            }
            println!();
            let color = std::env::var_os("NO_COLOR").is_none() && unsafe { libc::isatty(1) } == 1;
            print!(
                "{}",
                schema::unified_diff(
                    &ra,
                    &rb,
                    &fa.display().to_string(),
                    &fb.display().to_string(),
                    flags.max_lines,
                    color
                )
            );
        }
        DiffFormat::Text => {}
    }
    eprintln!("canonical forms: {} and {} ({})", fa.display(), fb.display(), time::elapsed(started.elapsed()));
    if equal {
        eprintln!("schemas are equal ({} statements)", ca.len());
        Ok(())
    } else {
        let n = difference.changed.len() + difference.added.len() + difference.removed.len();
        Err(Verdict(format!(
            "schemas differ: {n} object(s) ({} changed, {} only in b, {} only in a)",
            difference.changed.len(),
            difference.added.len(),
            difference.removed.len()
        ))
        .into())
    }
}

/// `postgres://…` (another server), a `.sql` file, or a database on DATABASE_URL's server.
fn source(ctx: &Ctx, spec: &str) -> Result<Source> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let url = PgUrl::parse(spec).map_err(|e| {
            fail(
                format!("`{}` is not a valid PostgreSQL URL: {e:#}", redact(spec)),
                "write it as postgres://user@host:5432/database",
            )
        })?;
        let db = url.dbname().map(str::to_string).ok_or_else(|| {
            fail(format!("`{}` names no database", url.redacted()), "end the URL with the database name")
        })?;
        let server = Server::connect(url, &ctx.config.maintenance_db)?;
        return database(server, db);
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
    database(ctx.server()?, spec.to_string())
}

fn database(server: Server, db: String) -> Result<Source> {
    if !server.database_exists(&db)? {
        return Err(fail(
            format!("database `{db}` does not exist on {}", server.url.server_label()),
            "check the name (`cargo xtask db status` lists the tool's databases), or build it (`cargo xtask db fresh`)",
        ));
    }
    Ok(Source::Database { server: Box::new(server), db })
}

fn redact(spec: &str) -> String {
    PgUrl::parse(spec).map(|u| u.redacted()).unwrap_or_else(|_| "(unparsable URL)".into())
}

/// How to get one side's text: read a file, or run `pg_dump`.
enum Job {
    Read(PathBuf),
    Dump(Command, String),
}

impl Job {
    fn run(mut self) -> Result<String> {
        match &mut self {
            Job::Read(p) => std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display())),
            Job::Dump(cmd, db) => proc::capture(cmd, None).with_context(|| format!("dumping the schema of `{db}`")),
        }
    }
}

/// The schema-only dump of a database, or a file's text.
fn job(side: &Source, schemas: &[String], opts: Options) -> Result<Job> {
    match side {
        Source::File(p) => Ok(Job::Read(p.clone())),
        Source::Database { server, db } => {
            let mut cmd = Command::new(server.pg_dump()?);
            cmd.args([
                "--schema-only",
                "--no-owner",
                "--no-tablespaces",
                "--no-security-labels",
                "--no-publications",
                "--no-subscriptions",
            ]);
            if !opts.with_privileges {
                cmd.arg("--no-privileges");
            }
            for s in schemas {
                cmd.arg(format!("--schema={s}"));
            }
            cmd.arg("-d").arg(server.arg_url(db));
            server.libpq_env(&mut cmd);
            Ok(Job::Dump(cmd, db.clone()))
        }
    }
}

/// What a schema-only dump does not show but a migration reviewer needs to know.
fn hidden_problems(server: &Server, db: &str) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct W {
        w: String,
    }
    let rows: Vec<W> = server.query(
        db,
        "SELECT format('`%s`: invalid index %s (a failed CREATE INDEX CONCURRENTLY?): pg_dump omits it', current_database(), i.indexrelid::regclass) AS w \
         FROM pg_index i WHERE NOT i.indisvalid \
         UNION ALL SELECT format('`%s`: constraint %s on %s is NOT VALID (existing rows are not checked)', current_database(), c.conname, c.conrelid::regclass) \
         FROM pg_constraint c WHERE NOT c.convalidated AND c.conrelid <> 0 ORDER BY 1",
    )?;
    Ok(rows.into_iter().map(|r| r.w).collect())
}
