//! Everything that talks to PostgreSQL: its programs ([`tools`]), the embedded local cluster
//! ([`cluster`]), URLs ([`url`]), and [`Server`], which runs SQL through `psql`.
//!
//! Invariants: identifiers and literals are always quoted ([`ident`], [`literal`]); secrets reach
//! programs only through their environment ([`libpq_env`]: the password as `PGPASSWORD`, the other
//! secret parameters in a [`service`] file); URLs in argv and messages are built with
//! [`PgUrl::without_secrets`] or [`PgUrl::redacted`].

pub mod client;
pub mod clone;
pub mod cluster;
pub mod dump;
pub mod freshness;
pub mod marker;
pub mod patch;
pub mod service;
pub mod session;
pub mod staging;
pub mod tools;
pub mod url;
pub mod xid;

use std::cell::{OnceCell, RefCell};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::fail;
use crate::proc;
pub use url::PgUrl;

pub use marker::{Kind, Marker};

/// A PostgreSQL server reached through `psql`.
pub struct Server {
    /// `DATABASE_URL`: the server, credentials, and the "current" database.
    pub url: PgUrl,
    pub maintenance_db: String,
    pub psql: PathBuf,
    pg_dump: PathBuf,
    pg_dump_checked: OnceCell<()>,
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    pub major: u32,
    /// The service file with `url`'s secret parameters, if it has any.
    service: Option<PathBuf>,
    /// The session on the maintenance database, opened on first use.
    admin: RefCell<Option<session::Session>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseInfo {
    pub name: String,
    pub size_bytes: i64,
    /// Parsed from the database comment when this tool made it.
    #[serde(deserialize_with = "marker_from_comment", rename = "comment")]
    pub marker: Option<Marker>,
    pub allow_connections: bool,
    pub is_template: bool,
    /// Client sessions connected to it right now. Not autovacuum's workers: DROP DATABASE ends
    /// those itself, and one visiting a database a moment after it was made must not make a
    /// rebuild refuse "1 open connection".
    pub connections: i64,
}

fn marker_from_comment<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Marker>, D::Error> {
    let comment: Option<String> = Option::deserialize(d)?;
    Ok(comment.as_deref().and_then(Marker::from_comment))
}

impl DatabaseInfo {
    /// What this tool made it as; `None`: not made by this tool.
    pub fn kind(&self) -> Option<&Kind> {
        self.marker.as_ref().map(|m| &m.kind)
    }

    /// Its record as a worktree's database, if it is one.
    pub fn branch(&self) -> Option<&marker::Branch> {
        match self.kind()? {
            Kind::Branch(b) => Some(b),
            _ => None,
        }
    }
}

impl Server {
    /// Reaches the server named by `url` (admin work goes to `maintenance_db`), and checks the
    /// client programs against it: `psql` and `pg_dump` exist, and `pg_dump` is not older.
    pub fn connect(url: PgUrl, maintenance_db: &str) -> Result<Server> {
        let psql = tools::find("psql")?;
        let pg_dump = tools::find("pg_dump")?;
        let service = service::for_url(&url)?;
        let mut server = Server {
            url,
            maintenance_db: maintenance_db.to_string(),
            psql,
            pg_dump,
            pg_dump_checked: OnceCell::new(),
            version: String::new(),
            major: 0,
            service,
            admin: RefCell::new(None),
        };
        #[derive(Deserialize)]
        struct V {
            version: String,
            num: i64,
        }
        let v: V = server
            .query_one(maintenance_db, "SELECT current_setting('server_version') AS version, current_setting('server_version_num')::int AS num")
            .map_err(|e| match e.downcast_ref::<crate::error::Fix>() {
                // Already says which server and what to do.
                Some(_) => e,
                None => e.context(format!("connecting to PostgreSQL at {}", server.url.server_label())),
            })?;
        server.version = v.version;
        server.major = (v.num / 10000) as u32;
        Ok(server)
    }

    /// `pg_dump`, checked once not to be older than the server (it could not dump it).
    pub fn pg_dump(&self) -> Result<&PathBuf> {
        if self.pg_dump_checked.get().is_none() {
            let dump_major = tools::major_version(&self.pg_dump)?;
            if dump_major < self.major {
                return Err(fail(
                    format!(
                        "{} is version {dump_major}, older than the server ({}): it cannot dump it",
                        self.pg_dump.display(),
                        self.major
                    ),
                    format!(
                        "install the PostgreSQL {} client programs and put them first on PATH (or set XTASK_PG_BINDIR)",
                        self.major
                    ),
                ));
            }
            let _ = self.pg_dump_checked.set(());
        }
        Ok(&self.pg_dump)
    }

    /// Environment for any libpq program talking to this server (see [`libpq_env`]).
    pub fn libpq_env(&self, cmd: &mut Command) {
        set_libpq_env(cmd, &self.url, self.service.as_deref());
    }

    /// The URL of `db` for a program's argv: no secrets.
    pub fn arg_url(&self, db: &str) -> String {
        self.url.with_dbname(db).without_secrets()
    }

    /// `psql` connected to `db`, quiet, unaligned, stopping at the first error, reading SQL from
    /// stdin.
    pub fn psql(&self, db: &str) -> Result<Command> {
        let mut cmd = self.psql_session(db)?;
        cmd.args(["-v", "ON_ERROR_STOP=1"]);
        Ok(cmd)
    }

    /// `psql` connected to `db`, quiet, unaligned; error handling left to the caller.
    pub fn psql_session(&self, db: &str) -> Result<Command> {
        self.command(&self.psql, &["-X", "-q", "-A", "-t"], db, &[])
    }

    /// Runs SQL in `db`. On the maintenance database: one statement, in the run's session.
    /// Elsewhere: any number of statements, autocommit, stopping at the first error.
    pub fn exec(&self, db: &str, sql: &str) -> Result<()> {
        self.run_sql(db, sql).map(drop)
    }

    /// Statements in one transaction on the maintenance database: all or nothing.
    pub fn transaction(&self, statements: &[String]) -> Result<()> {
        self.exec(&self.maintenance_db, "BEGIN")?;
        for stmt in statements {
            if let Err(e) = self.exec(&self.maintenance_db, stmt) {
                let _ = self.exec(&self.maintenance_db, "ROLLBACK");
                return Err(e);
            }
        }
        self.exec(&self.maintenance_db, "COMMIT")
    }

    /// Runs a query in `db` and deserializes its rows (through `json_agg`, so any column type).
    pub fn query<T: DeserializeOwned>(&self, db: &str, sql: &str) -> Result<Vec<T>> {
        let wrapped = format!("SELECT coalesce(json_agg(q), '[]'::json) FROM ({sql}) q");
        let out = self.run_sql(db, &wrapped)?;
        serde_json::from_str(out.trim()).with_context(|| format!("reading the result of a query on `{db}`"))
    }

    /// Runs a psql script (meta-commands allowed) in `db` in a new session; returns its output.
    pub fn script(&self, db: &str, script: &str) -> Result<String> {
        proc::capture(&mut self.psql(db)?, Some(script.as_bytes())).map_err(|e| classify(e, &self.url, db))
    }

    fn run_sql(&self, db: &str, sql: &str) -> Result<String> {
        let out = if db == self.maintenance_db {
            let open = || session::Session::open(self.psql_session(db)?);
            session::run_on(&mut self.admin.borrow_mut(), open, sql)
        } else {
            proc::capture(&mut self.psql(db)?, Some(format!("{sql};").as_bytes()))
        };
        out.map_err(|e| classify(e, &self.url, db))
    }

    pub fn query_one<T: DeserializeOwned>(&self, db: &str, sql: &str) -> Result<T> {
        self.query(db, sql)?.into_iter().next().with_context(|| format!("a query on `{db}` returned no row"))
    }

    /// The number a one-row query returns in its column `n` (a `count(*) AS n`).
    pub fn count(&self, db: &str, sql: &str) -> Result<i64> {
        #[derive(Deserialize)]
        struct Row {
            n: i64,
        }
        Ok(self.query_one::<Row>(db, sql)?.n)
    }

    /// Databases whose names start with `prefix`, plus any named in `also`. One dropped while this
    /// runs (a background refill swaps the spare) shows with size 0 rather than failing the listing.
    pub fn databases(&self, prefix: &str, also: &[&str]) -> Result<Vec<DatabaseInfo>> {
        self.list(prefix, also, true)
    }

    /// [`Server::databases`] without their sizes (`size_bytes` 0): `pg_database_size` reads the
    /// directory of every database listed, a cost that grows with every branch database, paid
    /// by each run that only needs names and markers (the sweep, the records of copies).
    pub fn databases_unsized(&self, prefix: &str, also: &[&str]) -> Result<Vec<DatabaseInfo>> {
        self.list(prefix, also, false)
    }

    /// [`Server::database`] without its size (`size_bytes` 0).
    pub fn database_unsized(&self, name: &str) -> Result<Option<DatabaseInfo>> {
        Ok(self.list("\u{1}never", &[name], false)?.into_iter().next())
    }

    fn list(&self, prefix: &str, also: &[&str], sized: bool) -> Result<Vec<DatabaseInfo>> {
        let also: Vec<String> = also.iter().map(|n| literal(n)).collect();
        let also = if also.is_empty() { "NULL".to_string() } else { also.join(", ") };
        let size = if sized { "coalesce(pg_database_size(d.oid), 0)" } else { "0::bigint" };
        self.query(
            &self.maintenance_db,
            &format!(
                "SELECT d.datname AS name, {size} AS size_bytes, \
                 shobj_description(d.oid, 'pg_database') AS comment, d.datallowconn AS allow_connections, \
                 d.datistemplate AS is_template, \
                 (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid \
                  AND a.backend_type = 'client backend') AS connections \
                 FROM pg_database d WHERE starts_with(d.datname, {}) OR d.datname IN ({also}) ORDER BY d.datname",
                literal(prefix)
            ),
        )
    }

    pub fn database(&self, name: &str) -> Result<Option<DatabaseInfo>> {
        Ok(self.databases("\u{1}never", &[name])?.into_iter().next())
    }

    pub fn database_exists(&self, name: &str) -> Result<bool> {
        Ok(self.database_unsized(name)?.is_some())
    }

    /// `CREATE DATABASE name [clause]`, marked as ours. The returned guard drops it again unless
    /// [`Creating::keep`] is called: on an error, an interrupt or a panic alike.
    pub fn create_database(&self, name: &str, clause: &str, marker: &Marker) -> Result<Creating<'_>> {
        let existed = self.database_exists(name)?;
        if let Err(e) = self.exec(&self.maintenance_db, &format!("CREATE DATABASE {} {clause}", ident(name))) {
            // Interrupted, the statement can have completed all the same (the cancel came too
            // late): a database that was not there before is this call's, and goes.
            if !existed && self.database_exists(name).unwrap_or(false) {
                drop(Creating { server: self, name: name.to_string(), keep: false });
            }
            return Err(e.context(format!("creating database `{name}`")));
        }
        let guard = Creating { server: self, name: name.to_string(), keep: false };
        self.set_marker(name, marker)?;
        Ok(guard)
    }

    pub fn set_marker(&self, name: &str, marker: &Marker) -> Result<()> {
        self.exec(&self.maintenance_db, &mark_statement(name, marker)?)
            .with_context(|| format!("marking database `{name}`"))
    }

    /// Drops a database. `force` also ends other sessions on it (only for databases that are
    /// ours and half-made, or that the user asked to drop).
    pub fn drop_database(&self, name: &str, force: bool) -> Result<()> {
        let with = if force && self.major >= 13 { " WITH (FORCE)" } else { "" };
        let drop = || self.exec(&self.maintenance_db, &format!("DROP DATABASE IF EXISTS {}{with}", ident(name)));
        match drop() {
            // A subscription keeps its database (a rehearsed migration's `CREATE SUBSCRIPTION …
            // connect = false`): detached from its slot first, so nothing contacts the publisher,
            // it goes with the database.
            Err(e) if format!("{e:#}").contains("used by logical replication subscription") => {
                self.exec(
                    name,
                    "DO $xtask$ DECLARE s name; BEGIN FOR s IN SELECT subname FROM pg_subscription WHERE subdbid = \
                     (SELECT oid FROM pg_database WHERE datname = current_database()) LOOP \
                     EXECUTE format('ALTER SUBSCRIPTION %I DISABLE', s); \
                     EXECUTE format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', s); \
                     EXECUTE format('DROP SUBSCRIPTION %I', s); END LOOP; END $xtask$",
                )?;
                drop()
            }
            r => r,
        }
        .with_context(|| format!("dropping database `{name}`"))
    }
}

/// `COMMENT ON DATABASE name IS 'xtask-db {marker}'`: how a database is marked, alone or inside
/// a publishing transaction.
pub fn mark_statement(name: &str, marker: &Marker) -> Result<String> {
    Ok(format!("COMMENT ON DATABASE {} IS {}", ident(name), literal(&marker.to_comment()?)))
}

/// A database being built: dropped when this goes out of scope without [`Creating::keep`].
pub struct Creating<'a> {
    server: &'a Server,
    pub name: String,
    keep: bool,
}

impl<'a> Creating<'a> {
    /// Guards a database created by other means.
    pub fn adopt(server: &'a Server, name: &str) -> Creating<'a> {
        Creating { server, name: name.to_string(), keep: false }
    }

    /// Drops the database now, quietly (it was temporary by design). If that fails (a second
    /// Ctrl-C during the drop), the guard's own drop tries once more, and says so.
    pub fn discard(mut self) -> Result<()> {
        let dropped = self.server.drop_database(&self.name, true);
        self.keep = dropped.is_ok();
        dropped
    }

    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        eprintln!("removing the unfinished database `{}`", self.name);
        if let Err(e) = self.server.drop_database(&self.name, true) {
            eprintln!(
                "warning: could not drop `{}` ({e:#}); drop it by hand: psql -d \"{}\" -c 'DROP DATABASE {}'",
                self.name,
                self.server.arg_url(&self.server.maintenance_db),
                ident(&self.name).replace('\'', "'\\''")
            );
        }
    }
}

/// A session-level advisory lock, held by this run's admin session on the maintenance database
/// until dropped (or until the process dies: its `psql`, and with it the server session, goes
/// too). Runs and background refills serialise on these where they touch the same databases.
pub struct Lock<'a> {
    server: &'a Server,
    key: String,
    shared: bool,
}

impl<'a> Lock<'a> {
    /// Waits for the lock, saying so when another run holds it.
    pub fn exclusive(server: &'a Server, key: &str, what: &str) -> Result<Lock<'a>> {
        Lock::acquire(server, key, false, what)
    }

    /// Waits for a shared hold (several readers at once, no exclusive holder).
    pub fn shared(server: &'a Server, key: &str, what: &str) -> Result<Lock<'a>> {
        Lock::acquire(server, key, true, what)
    }

    /// Takes the lock only if nobody holds it.
    pub fn try_exclusive(server: &'a Server, key: &str) -> Result<Option<Lock<'a>>> {
        let lock = Lock { server, key: key.to_string(), shared: false };
        Ok(lock.try_take()?.then_some(lock))
    }

    fn acquire(server: &'a Server, key: &str, shared: bool, what: &str) -> Result<Lock<'a>> {
        let lock = Lock { server, key: key.to_string(), shared };
        if !lock.try_take()? {
            crate::term::announce(format_args!("waiting for another run of this tool to finish with {what}"));
            let f = if shared { "pg_advisory_lock_shared" } else { "pg_advisory_lock" };
            server
                .exec(&server.maintenance_db, &format!("SELECT {f}({})", lock.id()))
                .with_context(|| format!("waiting for the lock on {what}"))?;
        }
        Ok(lock)
    }

    fn id(&self) -> String {
        format!("hashtextextended({}, 0)", literal(&format!("xtask-db {}", self.key)))
    }

    fn try_take(&self) -> Result<bool> {
        let f = if self.shared { "pg_try_advisory_lock_shared" } else { "pg_try_advisory_lock" };
        #[derive(Deserialize)]
        struct Got {
            got: bool,
        }
        let got: Got =
            self.server.query_one(&self.server.maintenance_db, &format!("SELECT {f}({}) AS got", self.id()))?;
        Ok(got.got)
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        let f = if self.shared { "pg_advisory_unlock_shared" } else { "pg_advisory_unlock" };
        let _ = self.server.exec(&self.server.maintenance_db, &format!("SELECT {f}({})", self.id()));
    }
}

/// Environment for a libpq program connecting to `url`: its secrets, which never go in argv (the
/// password as `PGPASSWORD`, the other secret parameters in a [`service`] file), a connect timeout
/// unless one is configured, and our application name.
pub fn libpq_env(cmd: &mut Command, url: &PgUrl) -> Result<()> {
    let service = service::for_url(url)?;
    set_libpq_env(cmd, url, service.as_deref());
    Ok(())
}

fn set_libpq_env(cmd: &mut Command, url: &PgUrl, service: Option<&Path>) {
    if let Some(pw) = url.password() {
        cmd.env("PGPASSWORD", pw);
    }
    if let Some(file) = service {
        cmd.env("PGSERVICEFILE", file).env("PGSERVICE", service::SERVICE);
    }
    if url.param("connect_timeout").is_none() && std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        cmd.env("PGCONNECT_TIMEOUT", "10");
    }
    cmd.env("PGAPPNAME", "xtask-db");
}

/// Turns libpq's connection failures into errors that say what to do.
pub fn classify(err: anyhow::Error, url: &PgUrl, db: &str) -> anyhow::Error {
    let text = format!("{err:#}");
    let server = url.server_label();
    let (cause, fix) = if text.contains("Connection refused")
        || text.contains("No such file or directory") && text.contains("socket")
    {
        ("connection refused", "start it with `cargo xtask db up` (the embedded local server), or point DATABASE_URL (environment or .env) at a running server")
    } else if text.contains("could not translate host name") {
        ("unknown host name", "check the host in DATABASE_URL (environment or .env)")
    } else if text.contains("timeout expired") {
        ("no answer (timeout)", "check the host and port in DATABASE_URL (environment or .env), and the network")
    } else if text.contains("password authentication failed") || text.contains("no password supplied") {
        (
            "the server rejected the user or password",
            "check the user and password in DATABASE_URL (environment or .env)",
        )
    } else if text.contains(&format!("database \"{db}\" does not exist")) {
        return fail(
            format!("database `{db}` does not exist on {server}"),
            "create it (`cargo xtask db template create` builds the golden template) or fix the name in DATABASE_URL",
        );
    } else {
        return err;
    };
    fail(format!("cannot connect to PostgreSQL at {server}: {cause}"), fix)
}

/// A quoted SQL identifier: `"a""b"`. Rejects NUL, which PostgreSQL cannot store.
pub fn ident(name: &str) -> String {
    assert!(!name.contains('\0'), "identifier contains NUL");
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as one single-quoted argument of a psql meta-command (`\\connect 'postgresql://…'`).
/// Not [`literal`]: psql reads no `E'…'` there, but a backslash is an escape inside the quotes
/// and a line break would end the command, so both are escaped, and `''` is a quote.
pub fn meta_arg(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('\'', "''").replace('\n', "\\n").replace('\r', "\\r");
    format!("'{escaped}'")
}

/// A quoted SQL string literal, correct whatever `standard_conforming_strings` says (for
/// statements; psql meta-commands take [`meta_arg`]).
pub fn literal(value: &str) -> String {
    assert!(!value.contains('\0'), "literal contains NUL");
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// `12.3 MB`.
pub fn human_size(bytes: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("feature/a-b"), "\"feature/a-b\"");
        assert_eq!(ident("x\"; DROP DATABASE y; --"), "\"x\"\"; DROP DATABASE y; --\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
        // A meta-command argument stays one argument on one line.
        assert_eq!(meta_arg("postgres://h/db"), "'postgres://h/db'");
        assert_eq!(meta_arg("a'b\\c\nd\re"), "'a''b\\\\c\\nd\\re'");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(16 * 1024 * 1024 + 300_000), "16.3 MB");
    }
}
