//! The tool's one configuration place: `[workspace.metadata.db]` in the workspace's
//! `Cargo.toml`, then documented environment variables, then `--set KEY=VALUE` flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::error::fail;

/// Environment variables that override configuration keys.
pub const ENV_OVERRIDES: &[(&str, &str)] =
    &[("WORKTREE_TEMPLATE_DB", "template"), ("XTASK_DB_PREFIX", "prefix"), ("XTASK_DB_DATA_DIR", "data_dir")];

/// The longest `prefix`: see [`Config::validate`].
pub const MAX_PREFIX: usize = 45;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Every database this tool creates starts with this prefix.
    #[serde(default = "defaults::prefix")]
    pub prefix: String,
    /// The golden template (env `WORKTREE_TEMPLATE_DB`).
    #[serde(default = "defaults::template")]
    pub template: String,
    /// Where admin work goes on the same server.
    #[serde(default = "defaults::maintenance_db")]
    pub maintenance_db: String,
    /// The embedded cluster's directory; relative paths are relative to the main worktree.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// The OS user the embedded cluster runs as when we are root.
    #[serde(default = "defaults::server_user")]
    pub server_user: String,
    #[serde(default = "defaults::migrations_dir")]
    pub migrations_dir: PathBuf,
    /// The migrator's ledger, schema-qualified.
    #[serde(default = "defaults::ledger_table")]
    pub ledger_table: String,
    /// The app's migrator, run with `DATABASE_URL` in its environment.
    #[serde(default = "defaults::migrate_command")]
    pub migrate_command: Vec<String>,
    /// SQL files applied after the migrations by `db template create`, in one transaction.
    #[serde(default)]
    pub seed_files: Vec<PathBuf>,
    /// Commands that regenerate artifacts derived from the migrated schema, run last by
    /// `db worktree` with `DATABASE_URL` and `PORT` in their environment.
    #[serde(default)]
    pub generate_commands: Vec<Vec<String>>,
    /// The canonical schema after every migration, written by `db generate` (committed).
    #[serde(default = "defaults::schema_snapshot")]
    pub schema_snapshot: PathBuf,
    /// The generated database reference, written by `db generate` (committed).
    #[serde(default = "defaults::database_doc")]
    pub database_doc: PathBuf,
    /// `db worktree` warns when the template is more than this many migrations behind.
    #[serde(default = "defaults::template_max_behind")]
    pub template_max_behind: usize,
    /// Keep one ready-made clone of the template (prepared in the background after each
    /// `db worktree`), so the next new worktree's database is a rename away.
    #[serde(default = "defaults::spare_clone")]
    pub spare_clone: bool,
    /// `db worktree BRANCH` seeds the new worktree's `target/` from the one of the worktree it
    /// runs in (hard links to the built dependencies, and to the workspace's own units that
    /// nothing can make stale there), so its first build compiles only what differs. Each
    /// worktree keeps its own `target/` and binaries.
    #[serde(default = "defaults::seed_build_cache")]
    pub seed_build_cache: bool,
    /// Worktree ports are picked above the main worktree's `PORT`, or above this one.
    #[serde(default = "defaults::base_port")]
    pub base_port: u16,
    /// The production-clone procedure (`db clone-prod`, `list-clones`, `load-clone`).
    #[serde(default)]
    pub aws: AwsConfig,
    /// `db schema-diff`'s settings.
    #[serde(default)]
    pub schema_diff: SchemaDiffConfig,
    /// `db rehearse`'s thresholds and smoke test.
    #[serde(default)]
    pub rehearse: RehearseConfig,
    /// Masking personal data (`db mask`, `load-clone --mask`).
    #[serde(default)]
    pub mask: MaskConfig,
    /// The workspace root of the worktree we run in (not a key: where the file was found).
    #[serde(skip)]
    pub root: PathBuf,
}

/// `[workspace.metadata.db.schema_diff]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaDiffConfig {
    /// Objects never compared, by the name the report gives them (`table public.spatial_ref_sys`,
    /// `extension postgis`); `*` matches any run of characters (`* tiger.*` is everything in the
    /// schema `tiger`). `--ignore` adds to these.
    pub ignore: Vec<String>,
}

/// `[workspace.metadata.db.mask]`: the secret key's source and a rule for every column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// The environment variable holding the secret key (at least 16 bytes).
    pub key_env: String,
    /// For `clone-prod`: read the key from this SSM parameter (SecureString) instead.
    pub key_parameter: Option<String>,
    /// For `clone-prod`: or from this Secrets Manager secret (its whole string).
    pub key_secret: Option<String>,
    /// `"schema.table.column"` (or `"schema.table.*"`) → a rule (`crate::mask::RULE_NAMES`).
    pub rules: std::collections::BTreeMap<String, crate::mask::RuleSpec>,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            key_env: "XTASK_MASK_KEY".into(),
            key_parameter: None,
            key_secret: None,
            rules: Default::default(),
        }
    }
}

/// `[workspace.metadata.db.rehearse]`: what `db rehearse` calls a finding, and its smoke test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RehearseConfig {
    /// A lock that blocks reads or writes of a table that existed before, held longer than
    /// this (until the migration's commit), is a finding: exit 1. `--max-lock-ms`.
    pub max_lock_ms: u64,
    /// A statement that runs longer than this is a finding. `--max-statement-ms`.
    pub max_statement_ms: u64,
    /// The smoke test, run with `DATABASE_URL` (the copy) and `PORT` (a free port) in its
    /// environment, before and after migrating; exit 0 passes. Empty: the app's server
    /// (`serve_command`) must answer `GET health_path` with 200.
    pub smoke_command: Vec<String>,
    /// The app's server for the default smoke test.
    pub serve_command: Vec<String>,
    pub health_path: String,
    /// How long the smoke test may take (a first build of the app included).
    pub smoke_timeout_secs: u64,
}

impl Default for RehearseConfig {
    fn default() -> Self {
        RehearseConfig {
            max_lock_ms: 1000,
            max_statement_ms: 60_000,
            smoke_command: Vec::new(),
            serve_command: ["cargo", "run", "--package", "app", "--", "serve"].map(String::from).to_vec(),
            health_path: "/health".into(),
            smoke_timeout_secs: 600,
        }
    }
}

/// `[workspace.metadata.db.aws]`: defaults of the production-clone verbs (each has a flag).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// The production RDS instance to clone (an instance of an Aurora cluster: its cluster).
    pub source_instance: Option<String>,
    /// Or the production Aurora PostgreSQL cluster (a copy-on-write clone of it).
    pub source_cluster: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// The EC2 bastion (by its `Name` tag) the SSM tunnel goes through.
    pub bastion: Option<String>,
    /// SSM parameter with the database credentials as JSON (`username`, `password`, `dbname`);
    /// optional: without it, the throwaway gets a one-time master password.
    pub credentials_parameter: Option<String>,
    /// Or a Secrets Manager secret with the same JSON.
    pub credentials_secret: Option<String>,
    /// Log in to the throwaway with IAM database authentication (`--iam-auth`).
    pub iam_auth: bool,
    /// The database user for `iam_auth` (default: the instance's master user).
    pub db_user: Option<String>,
    /// The database to dump (default: the credentials' `dbname`, else the instance's own).
    pub dbname: Option<String>,
    /// How `clone-prod` reaches the throwaway instance.
    pub tunnel: TunnelKind,
    /// The forwarder for `tunnel = "command"` ({local_port}, {host}, {port} are filled in).
    pub tunnel_command: Option<String>,
    pub instance_class: String,
    /// Reuse the newest available snapshot when younger than this.
    pub freshness_hours: u64,
    /// When a throwaway instance counts as overdue (its `ExpiresAt` tag).
    pub clone_ttl_hours: u64,
    /// Where dumps go (must be git-ignored).
    pub dump_dir: PathBuf,
    /// Tables `clone-prod` dumps at a time (`pg_dump -Fd -j N`, a directory); 1: one
    /// `pg_dump -Fc` file. `--jobs`.
    pub dump_jobs: u32,
}

/// How `clone-prod` reaches the throwaway instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    /// SSM Session Manager port forwarding through the bastion (session-manager-plugin).
    Ssm,
    /// Connect to the instance's endpoint (inside the VPC or on its VPN).
    Direct,
    /// A forwarder of your own (`tunnel_command`).
    Command,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            source_instance: None,
            source_cluster: None,
            region: None,
            profile: None,
            bastion: None,
            credentials_parameter: None,
            credentials_secret: None,
            iam_auth: false,
            db_user: None,
            dbname: None,
            tunnel: TunnelKind::Ssm,
            tunnel_command: None,
            instance_class: "db.t4g.small".into(),
            freshness_hours: 24,
            clone_ttl_hours: 6,
            dump_dir: "dump".into(),
            dump_jobs: 4,
        }
    }
}

mod defaults {
    use std::path::PathBuf;
    pub fn prefix() -> String {
        "app_".into()
    }
    pub fn template() -> String {
        "app_template".into()
    }
    pub fn maintenance_db() -> String {
        "postgres".into()
    }
    pub fn data_dir() -> PathBuf {
        ".dev-db".into()
    }
    pub fn server_user() -> String {
        "postgres".into()
    }
    pub fn migrations_dir() -> PathBuf {
        "migrations".into()
    }
    pub fn ledger_table() -> String {
        "public._sqlx_migrations".into()
    }
    pub fn schema_snapshot() -> PathBuf {
        "docs/schema.sql".into()
    }
    pub fn database_doc() -> PathBuf {
        "docs/database.md".into()
    }
    pub fn template_max_behind() -> usize {
        20
    }
    pub fn spare_clone() -> bool {
        true
    }
    pub fn seed_build_cache() -> bool {
        true
    }
    pub fn base_port() -> u16 {
        3000
    }
    pub fn migrate_command() -> Vec<String> {
        ["cargo", "run", "--package", "app", "--", "migrate"].map(String::from).to_vec()
    }
}

impl Config {
    /// Loads the configuration of the workspace containing `cwd`, with `overrides`
    /// (`KEY=VALUE`, VALUE in TOML syntax or a bare string) applied last.
    pub fn load(cwd: &Path, overrides: &[String]) -> Result<Config> {
        let root = find_workspace_root(cwd)?;
        let manifest = root.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        let doc: toml::Table = text.parse().with_context(|| format!("parsing {}", manifest.display()))?;
        let mut table = doc
            .get("workspace")
            .and_then(|w| w.get("metadata"))
            .and_then(|m| m.get("db"))
            .and_then(|d| d.as_table())
            .cloned()
            .unwrap_or_default();
        for (var, key) in ENV_OVERRIDES {
            if let Ok(v) = std::env::var(var) {
                if !v.trim().is_empty() {
                    table.insert(key.to_string(), toml::Value::String(v));
                }
            }
        }
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| fail(format!("`--set {o}` is not KEY=VALUE"), "write it as `--set template=my_db`"))?;
            let value = format!("v = {v}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.to_string()));
            // `rehearse.max_lock_ms=200`: a key of a sub-table.
            let mut path: Vec<&str> = k.trim().split('.').map(str::trim).collect();
            let last = path.pop().unwrap_or_default().to_string();
            let mut at = &mut table;
            for part in path {
                let entry = at.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                at = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(fail(
                            format!("`--set {k}=…`: `{part}` is not a table of keys"),
                            "write a key of [workspace.metadata.db] or of one of its tables, e.g. `--set rehearse.max_lock_ms=200`",
                        ))
                    }
                };
            }
            at.insert(last, value);
        }
        let mut config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            fail(
                format!("invalid configuration in [workspace.metadata.db] or --set: {}", e.message()),
                "see the keys in docs/ARCHITECTURE.md#configuration",
            )
        })?;
        config.root = root;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        // The longest name derived from the prefix is a staging name: `tmp_` + 4 hex digits + `_`
        // + a pid (up to 7 digits on Linux) + a 2-byte suffix = 18 bytes. A longer prefix would
        // let the server cut names at 63 bytes — and act on a name we did not mean.
        if self.prefix.is_empty()
            || self.prefix.len() > MAX_PREFIX
            || !self.prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(fail(
                format!(
                    "configuration key `prefix` ({:?}) must be 1 to {MAX_PREFIX} bytes of a-z, 0-9 and _ (every name this tool derives from it must fit PostgreSQL's 63 bytes)",
                    self.prefix
                ),
                "shorten `prefix` in [workspace.metadata.db] (or XTASK_DB_PREFIX), e.g. \"app_\"",
            ));
        }
        for (key, name) in [("template", &self.template), ("maintenance_db", &self.maintenance_db)] {
            if name.is_empty() || name.len() > crate::naming::MAX_NAME {
                return Err(fail(
                    format!("configuration key `{key}` must be 1 to 63 bytes (PostgreSQL would cut a longer name and use another database)"),
                    format!("shorten `{key}` in [workspace.metadata.db]"),
                ));
            }
        }
        if self.migrate_command.is_empty() {
            return Err(fail(
                "configuration key `migrate_command` is empty",
                "set it to the app's migrator, e.g. [\"cargo\", \"run\", \"-p\", \"app\", \"--\", \"migrate\"]",
            ));
        }
        Ok(())
    }

    /// Names of the tool's own databases, which no branch may map onto.
    pub fn fresh_db(&self) -> String {
        format!("{}fresh", self.prefix)
    }
    /// `db rehearse --keep`: the migrated copy, kept for a look.
    pub fn rehearsal_db(&self) -> String {
        format!("{}rehearsal", self.prefix)
    }

    /// The local copy of a production dump (`db load-clone`).
    pub fn prod_clone_db(&self) -> String {
        format!("{}prod_clone", self.prefix)
    }
    /// The frozen (connection-less) copy of the template, used while the template is in use.
    pub fn frozen_db(&self) -> String {
        format!("{}frozen_{}", self.prefix, crate::naming::short_hash(&self.template))
    }

    /// The ready-made spare clone of the template.
    pub fn spare_db(&self) -> String {
        format!("{}spare_{}", self.prefix, crate::naming::short_hash(&self.template))
    }

    pub fn migrations_path(&self) -> PathBuf {
        self.root.join(&self.migrations_dir)
    }
}

/// The nearest ancestor of `cwd` whose `Cargo.toml` declares a `[workspace]`.
pub fn find_workspace_root(cwd: &Path) -> Result<PathBuf> {
    for dir in cwd.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            if text.lines().any(|l| l.trim() == "[workspace]") {
                return Ok(dir.to_path_buf());
            }
        }
    }
    Err(fail(
        format!("no Cargo workspace above {}", cwd.display()),
        "run `cargo xtask` inside the repository (or one of its git worktrees)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(metadata: &str) -> tempdir::TempDir {
        let dir = tempdir::TempDir::new();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            format!("[workspace]\nmembers = []\n\n[workspace.metadata.db]\n{metadata}\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        dir
    }

    #[test]
    fn file_then_flags() {
        let dir = workspace("prefix = \"x_\"\ntemplate = \"golden\"");
        let c = Config::load(&dir.path().join("a/b"), &[]).unwrap();
        assert_eq!((c.prefix.as_str(), c.template.as_str(), c.root.as_path()), ("x_", "golden", dir.path()));
        let c = Config::load(dir.path(), &["template=other db".into(), "seed_files=[\"s.sql\"]".into()]).unwrap();
        assert_eq!(c.template, "other db");
        assert_eq!(c.seed_files, vec![PathBuf::from("s.sql")]);
    }

    #[test]
    fn a_dotted_key_sets_a_key_of_a_table_and_keeps_its_others() {
        let dir = workspace("[workspace.metadata.db.rehearse]\nmax_statement_ms = 5");
        let c = Config::load(dir.path(), &["rehearse.max_lock_ms=200".into()]).unwrap();
        assert_eq!((c.rehearse.max_lock_ms, c.rehearse.max_statement_ms), (200, 5));
        let err = format!("{:#}", Config::load(dir.path(), &["rehearse.max_statement_ms.x=1".into()]).unwrap_err());
        assert!(err.contains("`max_statement_ms` is not a table"), "{err}");
        let err = format!("{:#}", Config::load(dir.path(), &["rehearse.max_lok_ms=1".into()]).unwrap_err());
        assert!(err.contains("max_lok_ms"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = workspace("templat = \"x\"");
        let err = format!("{:#}", Config::load(dir.path(), &[]).unwrap_err());
        assert!(err.contains("templat"), "{err}");
        let dir = workspace("");
        let err = format!("{:#}", Config::load(dir.path(), &["seed_files=3".into()]).unwrap_err());
        assert!(err.contains("invalid configuration"), "{err}");
        let err = format!("{:#}", Config::load(dir.path(), &["nokey".into()]).unwrap_err());
        assert!(err.contains("not KEY=VALUE"), "{err}");
    }

    /// A tiny temporary directory (no dependency for one test helper).
    mod tempdir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> TempDir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "xtask-config-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
