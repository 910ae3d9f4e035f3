//! The whole command line, in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Project automation for this repository, run as `cargo xtask <command>`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, propagate_version = true)]
#[command(about = "Project automation: per-branch databases, the golden template, the test suite.")]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
pub enum Command {
    Db(Db),
    Test(Test),
    /// Benchmarks that print ratios against their baseline measured in the same run.
    #[command(subcommand)]
    Bench(Bench),
    Completions(Completions),
}

/// Print shell completions for every command and flag (for `xtask`: `alias xtask='cargo xtask'`).
///
/// The script completes the command `xtask`; with `alias xtask='cargo xtask'` in your shell's rc
/// file, `xtask db wor<Tab>` completes. Install it where your shell looks for completions.
#[derive(Debug, Args)]
#[command(after_help = COMPLETIONS_HELP)]
pub struct Completions {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// `db worktree` against the seed pipeline (createdb + pg_dump | psql), on pagila and ~300 MB.
    Worktree(BenchWorktree),
    /// `db schema-diff` against two sequential `pg_dump -s`; canonicalizing a 5 MB dump.
    SchemaDiff(BenchSchemaDiff),
    /// `db rehearse`: its traced migration against `app migrate`, its file copy against pg_restore.
    Rehearse(BenchRehearse),
    /// Masking three columns of a table against a plain `UPDATE … SET col = md5(col)`.
    Mask(BenchMask),
    /// `clone-prod`'s parallel dump (`pg_dump -Fd -j 2`) against `pg_dump -Fc`, through a tunnel.
    Dump(BenchDump),
}

/// Time `clone-prod`'s dump with `--jobs 2` (`pg_dump -Fd -j 2`) against `--jobs 1` (`pg_dump
/// -Fc`, one stream) of a multi-table database through a `command`-style TCP forwarder (TLS on),
/// in turn, alternating; then, as a diagnosis, without the forwarder and without compression,
/// with the CPU time of pg_dump, the forwarder and the server.
#[derive(Debug, Args)]
#[command(after_help = BENCH_DUMP_HELP)]
pub struct BenchDump {
    /// Runs per side and cell (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Tables in the database, all of one size.
    #[arg(long, default_value_t = 6)]
    pub tables: usize,
    /// Rows in each table (about 130 bytes each).
    #[arg(long, default_value_t = 500_000)]
    pub rows: usize,
    /// Jobs of the parallel side (at least 2).
    #[arg(long, default_value_t = 2)]
    pub jobs: u32,
    /// Only the cell the target is about (through the forwarder, default compression).
    #[arg(long)]
    pub skip_diagnosis: bool,
}

/// Time the masking script on a table of `--rows` rows with three masked columns against
/// `UPDATE … SET col = md5(col)` of the same columns, on identical copies; and `db mask
/// --check`'s work on the app's schema with `--customers` customers with its content sample
/// against without it.
#[derive(Debug, Args)]
#[command(after_help = BENCH_MASK_HELP)]
pub struct BenchMask {
    /// Runs per side (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Rows in the table (0: time only `db mask --check`).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Customers added to the app's schema for timing `db mask --check` with and without its
    /// content sample.
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: usize,
}

/// Time `db rehearse`'s traced migration against the app's migrator alone on an identical copy,
/// and its start of an iteration (a file copy) against `createdb` + `pg_restore -j` of a dump.
#[derive(Debug, Args)]
#[command(after_help = BENCH_REHEARSE_HELP)]
pub struct BenchRehearse {
    /// Runs per cell (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Contacts in the production copy (each with its audit event, which 0009 rewrites).
    #[arg(long, default_value_t = 200_000)]
    pub contacts: usize,
}

/// Time `db schema-diff` of two databases with the app's schema against the two `pg_dump -s`
/// runs one after the other, and the canonicalization of a 5 MB schema dump.
#[derive(Debug, Args)]
#[command(after_help = BENCH_SCHEMA_DIFF_HELP)]
pub struct BenchSchemaDiff {
    /// Runs per cell (the median is reported; the many-table cells take a quarter, at least 3).
    #[arg(long, default_value_t = 21)]
    pub runs: usize,
    /// Table counts for the many-table cells (comma-separated; 5 objects a table).
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000,2000")]
    pub tables: Vec<usize>,
}

/// Time `cargo xtask db worktree` against `createdb && pg_dump --no-owner --no-privileges | psql`
/// on a throwaway cluster, with and without an open connection to the template.
#[derive(Debug, Args)]
#[command(after_help = BENCH_WORKTREE_HELP)]
pub struct BenchWorktree {
    /// Runs per cell (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The pagila fixture's directory (default: ../shared/fixtures/pagila).
    #[arg(long, value_name = "DIR")]
    pub pagila: Option<PathBuf>,
    /// Leave out the ~300 MB template.
    #[arg(long)]
    pub skip_big: bool,
    /// Show the report of every `db worktree` run.
    #[arg(long)]
    pub verbose: bool,
    /// Measure without the spare clone (`spare_clone = false`): every run copies.
    #[arg(long)]
    pub no_spare: bool,
    /// Leave out the first-build comparison (a cold `cargo build -p app`: a minute or more).
    #[arg(long)]
    pub skip_build: bool,
    /// Leave out the inner loop (`db worktree` in a worktree that exists): only the user's path.
    #[arg(long)]
    pub skip_inner: bool,
    /// Only the first `cargo xtask db status` in a new worktree against the same command in this
    /// one (a minute or two).
    #[arg(long)]
    pub only_first_command: bool,
}

/// Databases: the local server, the golden template, migrations.
///
/// Databases for this repository: a local PostgreSQL server, the golden template every branch
/// starts from, and migrations.
///
/// The server is the one in DATABASE_URL (the environment wins over `.env`); admin work goes to
/// its maintenance database. Configuration lives in `[workspace.metadata.db]` in the root
/// Cargo.toml; every key can be overridden with `--set KEY=VALUE`.
#[derive(Debug, Args)]
#[command(after_long_help = ENV_HELP)]
pub struct Db {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub verb: DbVerb,
}

pub const ENV_HELP: &str = "\
Environment:
  DATABASE_URL          the server and current database (else read from .env)
  WORKTREE_TEMPLATE_DB  the golden template's name (config key `template`)
  XTASK_DB_PREFIX       prefix of every database this tool creates (config key `prefix`)
  XTASK_DB_DATA_DIR     the embedded cluster's directory (config key `data_dir`)
  XTASK_PG_BINDIR       use PostgreSQL programs from this directory only";

#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// Override a configuration key for this run, e.g. `--set template=my_golden` (repeatable;
    /// values in TOML syntax: `--set 'seed_files=["a.sql"]'`).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true, help_heading = "Configuration (every db verb)")]
    pub set: Vec<String>,
    /// The golden template's name (same as `--set template=NAME` or WORKTREE_TEMPLATE_DB).
    #[arg(long, value_name = "NAME", global = true, help_heading = "Configuration (every db verb)")]
    pub template: Option<String>,
}

impl ConfigArgs {
    /// All overrides as `KEY=VALUE`, named flags last (they win).
    pub fn overrides(&self) -> Vec<String> {
        let mut v = self.set.clone();
        if let Some(t) = &self.template {
            v.push(format!("template={}", toml_string(t)));
        }
        v
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

// What every verb's --help ends with: examples (each a command line the tests parse) and the
// exit codes.
macro_rules! exit_done {
    () => {
        "Exit status: 0 done; 2 an error (its one line says what failed and how to fix it); 128+N
stopped by signal N (130: Ctrl-C), nothing left half-made."
    };
}
macro_rules! exit_verdict {
    ($yes:literal, $no:literal) => {
        concat!(
            "Exit status: 0 ",
            $yes,
            "; 1 ",
            $no,
            " (a verdict, not an error); 2 an error; 128+N stopped by signal N."
        )
    };
}

macro_rules! help {
    ($exit:expr, $($example:literal),+ $(,)?) => {
        concat!("Examples:\n", $("  ", $example, "\n",)+ "\n", $exit)
    };
}

const COMPLETIONS_HELP: &str =
    help!(exit_done!(), "cargo xtask completions bash", "cargo xtask completions zsh", "cargo xtask completions fish",);

const UP_HELP: &str = help!(exit_done!(), "cargo xtask db up", "cargo xtask db up --port 55432");
const DOWN_HELP: &str = help!(exit_done!(), "cargo xtask db down");
const STATUS_HELP: &str = help!(exit_done!(), "cargo xtask db status", "cargo xtask db status --format json");
const URL_HELP: &str = help!(exit_done!(), "cargo xtask db url", "cargo xtask db url --show-password");
const PSQL_HELP: &str = concat!(
    "Examples:\n  cargo xtask db psql\n  cargo xtask db psql -- -c 'SELECT count(*) FROM crm.customers'\n\n",
    "Exit status: psql's (2 when psql cannot be started)."
);
const MIGRATE_HELP: &str = help!(exit_done!(), "cargo xtask db migrate");
const TEMPLATE_HELP: &str = help!(
    exit_done!(),
    "cargo xtask db template create",
    "cargo xtask db template create --force --dry-run",
    "cargo xtask db template create --force -y",
);
const WORKTREE_HELP: &str = help!(
    exit_done!(),
    "cargo xtask db worktree",
    "cargo xtask db worktree my-feature",
    "cargo xtask db worktree my-feature --path ../my-feature",
    "cargo xtask db worktree --reset -y",
    "cargo xtask db worktree --drop --dry-run",
);
const WORKTREES_HELP: &str = help!(
    exit_done!(),
    "cargo xtask db worktrees",
    "cargo xtask db worktrees --format json",
    "cargo xtask db worktrees --prune --dry-run",
    "cargo xtask db worktrees --prune -y",
);
const FRESH_HELP: &str = help!(exit_done!(), "cargo xtask db fresh", "cargo xtask db fresh --dry-run");
const CLONE_PROD_HELP: &str = help!(
    exit_verdict!("done (with --rehearse: clear)", "with --rehearse, a finding (as `db rehearse`)"),
    "cargo xtask db clone-prod --dry-run",
    "cargo xtask db clone-prod --rehearse",
    "cargo xtask db clone-prod --source-instance prod-db --bastion bastion-1",
    "cargo xtask db clone-prod --jobs 1",
    "cargo xtask db clone-prod --source-cluster prod-aurora --dry-run",
);
const LIST_CLONES_HELP: &str = help!(
    exit_done!(),
    "cargo xtask db list-clones",
    "cargo xtask db list-clones --prune --dry-run",
    "cargo xtask db list-clones --prune -y",
);
const LOAD_CLONE_HELP: &str = help!(
    exit_done!(),
    "cargo xtask db load-clone",
    "cargo xtask db load-clone dump/prod-20261203120000.dump",
    "cargo xtask db load-clone --dry-run",
);
const REHEARSE_HELP: &str = help!(
    exit_verdict!("clear (hints, if any, are suggestions)", "a finding: a lock or statement over its threshold, a failed migration, a failed smoke test or a gate difference"),
    "cargo xtask db rehearse",
    "cargo xtask db rehearse --from dump/prod-20261201093000.dump",
    "cargo xtask db rehearse --max-lock-ms 200 --format json --no-smoke",
);
const MASK_HELP: &str = help!(
    exit_verdict!("every column classified", "a column unreviewed, a rule stale or invalid (with --check)"),
    "cargo xtask db mask --check",
    "cargo xtask db mask app_prod_clone",
);
const DROP_CLONE_HELP: &str =
    help!(exit_done!(), "cargo xtask db drop-clone --dry-run", "cargo xtask db drop-clone -y");
const SCHEMA_DIFF_HELP: &str = help!(
    exit_verdict!("equal", "different"),
    "cargo xtask db schema-diff fresh docs/schema.sql",
    "cargo xtask db schema-diff current fresh --format json",
    "cargo xtask db schema-diff app_prod_clone fresh --ignore 'schema tiger'",
);
const GENERATE_HELP: &str = help!(
    exit_verdict!("written, or current with --check", "stale, with --check"),
    "cargo xtask db generate",
    "cargo xtask db generate --check"
);
const TEST_HELP: &str =
    help!(exit_done!(), "cargo xtask test", "cargo xtask test -- schema_diff::", "cargo xtask test --keep");
const BENCH_WORKTREE_HELP: &str = help!(
    exit_done!(),
    "cargo xtask bench worktree",
    "cargo xtask bench worktree --skip-big --runs 3",
    "cargo xtask bench worktree --only-first-command --runs 11"
);
const BENCH_MASK_HELP: &str =
    help!(exit_done!(), "cargo xtask bench mask", "cargo xtask bench mask --rows 200000 --runs 5");
const BENCH_REHEARSE_HELP: &str =
    help!(exit_done!(), "cargo xtask bench rehearse", "cargo xtask bench rehearse --runs 3 --contacts 50000");
const BENCH_DUMP_HELP: &str =
    help!(exit_done!(), "cargo xtask bench dump", "cargo xtask bench dump --runs 5 --skip-diagnosis");
const BENCH_SCHEMA_DIFF_HELP: &str =
    help!(exit_done!(), "cargo xtask bench schema-diff", "cargo xtask bench schema-diff --tables 500,2000");

#[derive(Debug, Subcommand)]
pub enum DbVerb {
    Up(Up),
    /// Stop the embedded local PostgreSQL; its data is kept.
    #[command(after_help = DOWN_HELP)]
    Down,
    Status(Status),
    Url(Url),
    Psql(Psql),
    /// Apply pending migrations to DATABASE_URL with the app's migrator.
    #[command(after_help = MIGRATE_HELP)]
    Migrate,
    /// Manage the golden template that branch databases are cloned from.
    #[command(subcommand)]
    Template(TemplateVerb),
    Worktree(Worktree),
    Worktrees(Worktrees),
    Fresh(Fresh),
    CloneProd(CloneProd),
    ListClones(ListClones),
    LoadClone(LoadClone),
    DropClone(DropClone),
    Rehearse(Rehearse),
    Mask(Mask),
    /// Prepare the ready-made spare clone of the template (run in the background by `db worktree`).
    #[command(hide = true)]
    RefillSpare,
    /// Seed a new worktree's target directory TO from FROM, profile directory by profile
    /// directory (run in the background by `db worktree BRANCH`, holding cargo's lock on each
    /// profile directory of TO as descriptors 3, 4, …, in the order given; each is released as
    /// soon as that profile directory is seeded).
    #[command(hide = true)]
    SeedBuildCache {
        from: PathBuf,
        to: PathBuf,
        profiles: Vec<String>,
    },
    SchemaDiff(SchemaDiff),
    Generate(Generate),
}

/// Compare two schemas semantically; exit 0 when equal, 1 when they differ, 2 on errors.
///
/// Compare two schemas: databases on the server (names), other servers (postgres:// URLs), or
/// `.sql` files (plain `pg_dump -s` output, or the committed snapshot).
///
/// Both sides are dumped at once and put in a canonical form: `\restrict` lines, SET and
/// set_config, comments, sequence positions, owners and privileges are dropped; statements are
/// sorted (creation order does not matter), and so are the columns of each table unless
/// --strict-column-order. Function bodies are compared verbatim. Publications are compared;
/// extension versions too when both sides are databases (a .sql file carries none);
/// subscriptions and security labels are not compared. The canonical forms are written
/// to dump/schema-diff/. Invalid indexes and NOT VALID constraints, which pg_dump does not show,
/// are reported as warnings. Exit 0 equal, 1 different (with a diff), 2 on errors.
#[derive(Debug, Args)]
#[command(after_help = SCHEMA_DIFF_HELP)]
pub struct SchemaDiff {
    /// One side: a database name, `fresh` (this worktree's `db fresh` database), `current` (the
    /// database DATABASE_URL names), a postgres:// URL, or a .sql file. Or give it as --a.
    #[arg(value_name = "A", conflicts_with = "a")]
    pub first: Option<String>,
    /// The other side (or --b).
    #[arg(value_name = "B", conflicts_with = "b")]
    pub second: Option<String>,
    /// One side, as a flag (the same as the first argument).
    #[arg(long, value_name = "A")]
    pub a: Option<String>,
    /// The other side, as a flag.
    #[arg(long, value_name = "B")]
    pub b: Option<String>,
    /// Compare only this schema of database sides (repeatable; default: the whole database).
    #[arg(long = "schema", value_name = "NAME")]
    pub schema: Vec<String>,
    /// Do not compare objects whose name in the report matches PATTERN (`*` matches anything:
    /// `'table public.spatial_ref_sys'`, `'* tiger.*'`); adds to `schema_diff.ignore` in
    /// [workspace.metadata.db]. The report says how many objects were ignored.
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignore: Vec<String>,
    /// Also compare privileges (GRANT/REVOKE).
    #[arg(long)]
    pub with_privileges: bool,
    /// Also compare the order of columns within tables (matters for SELECT * and COPY).
    #[arg(long)]
    pub strict_column_order: bool,
    /// Output: a unified diff for people, or JSON (objects added/removed/changed) for machines.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Show at most this many diff lines.
    #[arg(long, default_value_t = 200)]
    pub max_lines: usize,
}

/// (Re)create `<prefix>fresh` from an empty database and every migration; print its name.
///
/// (Re)create this worktree's fresh database (`<prefix>fresh` in the main worktree,
/// `<prefix>fresh_<hash>` in a linked one) from an empty database and every migration, under a
/// temporary name; the previous one is replaced in the same transaction as the new one takes the
/// name.
#[derive(Debug, Args, Clone)]
#[command(after_help = FRESH_HELP)]
pub struct Fresh {
    /// Say what would be built or replaced, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Restore a production dump (the newest dump/prod-*.dump by default) into `<prefix>prod_clone`.
///
/// Restore a production dump — a `pg_dump -Fc` file or a `pg_dump -Fd` directory (one holding
/// `toc.dat`), as `db clone-prod` writes them — into `<prefix>prod_clone` with `pg_restore
/// --no-owner --no-privileges -j <cores>`, under a temporary name that replaces the previous copy
/// only when complete.
/// Errors about missing roles are warnings; any other error is fatal (nothing is left behind).
#[derive(Debug, Args, Clone)]
#[command(after_help = LOAD_CLONE_HELP)]
pub struct LoadClone {
    /// The dump (a `pg_dump -Fc` file or a `pg_dump -Fd` directory); default: the newest
    /// dump/prod-*.dump, file or directory.
    pub dump: Option<PathBuf>,
    /// Mask personal data by `[workspace.metadata.db.mask]` before the copy takes its name (for a
    /// dump taken without rules): every column classified first, the key from `mask.key_env`.
    #[arg(long)]
    pub mask: bool,
    /// Say which dump would be restored and what it would replace, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Check that every column has a masking rule (`--check`, for CI), or list what the rules do.
///
/// Every column of every table must be classified in `[workspace.metadata.db.mask.rules]`:
/// `"schema.table.column" = RULE` (or `"schema.table.*"` for the rest of a table). Every kept or
/// unruled column that can hold text (text, varchar, citext, arrays, composites, json, jsonb,
/// domains, …) is sampled (~8 random pages of a large table, a small one whole) for
/// e-mail addresses, phone numbers, IBANs, card numbers, IP addresses and people's names. A column without a rule — one a migration
/// added since the rules were written —, a personal-looking column (by its name: email, phone,
/// name, address, birth, ip, token, …; or by its content) covered only by a table's `*` keep, an
/// explicit `keep` whose content looks personal (`keep!` marks it reviewed), a rule naming no
/// column, or a rule its column cannot take stops the run, naming each with the line to add (for
/// composite, array and json columns `null`, or a `fixed` empty value when NOT NULL). Rules:
/// email, phone, first_name, last_name, name, redact, ip, null, hash, keep, keep!, { date_shift =
/// DAYS }, { fixed = "VALUE" }. Materialized views are refreshed after masking and comments that
/// look personal redacted (listed as `refresh` and `redact` lines). Masking itself runs in
/// `load-clone --mask` (and on the throwaway instance in `clone-prod`).
#[derive(Debug, Args, Clone)]
#[command(after_help = MASK_HELP)]
pub struct Mask {
    /// The database to classify: a database on the server, or `fresh` (this worktree's `db fresh`;
    /// build it first, e.g. in CI: `cargo xtask db fresh && cargo xtask db mask --check`).
    #[arg(value_name = "DB", default_value = "fresh")]
    pub db: String,
    /// Exit 1 when a column is unreviewed or a rule is stale or invalid (the CI gate).
    #[arg(long)]
    pub check: bool,
}

/// Rehearse this branch's pending migrations on a copy of the production copy: traced, gated, smoked.
///
/// Rehearse this branch's pending migrations on a file copy (`CREATE DATABASE … TEMPLATE`) of the
/// loaded production copy, `<prefix>prod_clone`, which is never modified: every iteration starts
/// again in seconds. Steps: the smoke test on the unmigrated copy; every pending migration applied
/// as the app's migrator (sqlx) applies it — one transaction each, the same ledger rows — one
/// statement at a time, with the locks the migrating transaction holds after each (and which of
/// SELECT and INSERT/UPDATE/DELETE they block, for how long: until commit), table rewrites, rows,
/// WAL and sizes (indexes included), and the safer form of each risky statement (a hint, e.g.
/// CREATE INDEX CONCURRENTLY, NOT VALID then VALIDATE; listed in the summary as suggestions, they
/// do not change the exit code); the gate (`schema-diff` against a fresh build of this branch); the
/// smoke test on the migrated copy. Statements reach the server as sqlx sends them (no psql
/// variables or meta-commands). What a migration changes of the server outside the copy — roles,
/// settings, ALTER SYSTEM, databases, tablespaces — is a finding and is undone; a statement naming
/// another database (ALTER DATABASE x, GRANT … ON DATABASE x) is refused before it runs. The
/// report: Markdown for the pull request (written to
/// dump/rehearse/, git-ignored: error messages can quote production rows) and --format json.
/// Thresholds: [workspace.metadata.db.rehearse] and the flags below. For a production too big for
/// a laptop, `db clone-prod --rehearse` runs this rehearsal on the throwaway instance itself.
#[derive(Debug, Args, Clone)]
#[command(after_help = REHEARSE_HELP)]
pub struct Rehearse {
    /// Rehearse from this database on the server (default `<prefix>prod_clone`), or from this
    /// dump (a `pg_dump -Fc` file or a `pg_dump -Fd` directory), loaded first into
    /// `<prefix>prod_clone` as `db load-clone` does.
    #[arg(long, value_name = "DB|DUMP")]
    pub from: Option<String>,
    /// Where the Markdown report goes (default: dump/rehearse/rehearse-<UTC time>.md).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Output on stdout: the summary for people, or the whole report as JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// A lock blocking reads or writes of an existing table held longer than this is a finding
    /// (default: `rehearse.max_lock_ms`, 1000).
    #[arg(long, value_name = "MS")]
    pub max_lock_ms: Option<u64>,
    /// A statement running longer than this is a finding (default: `rehearse.max_statement_ms`,
    /// 60000).
    #[arg(long, value_name = "MS")]
    pub max_statement_ms: Option<u64>,
    /// Leave out both smoke tests.
    #[arg(long)]
    pub no_smoke: bool,
    /// Keep the migrated copy as `<prefix>rehearsal` (replacing the previous one) instead of
    /// dropping it.
    #[arg(long)]
    pub keep: bool,
}

/// Drop `<prefix>prod_clone` and `<prefix>rehearsal`, the local copies of production.
///
/// Drop `<prefix>prod_clone` (only if `db load-clone` made it) and `<prefix>rehearsal` (only if
/// `db rehearse --keep` made it). The dumps stay.
#[derive(Debug, Args, Clone)]
#[command(after_help = DROP_CLONE_HELP)]
pub struct DropClone {
    /// Answer yes to the confirmation question (required without a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Say what would be dropped, and drop nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where the AWS verbs look (defaults from `[workspace.metadata.db.aws]`; credentials come from the
/// usual AWS sources: environment, profile, SSO; `AWS_ENDPOINT_URL` is honoured).
#[derive(Debug, Args, Clone, Default)]
pub struct AwsArgs {
    /// AWS region (else the config's, else AWS_REGION / the profile's).
    #[arg(long)]
    pub region: Option<String>,
    /// AWS profile (else the config's, else AWS_PROFILE / default).
    #[arg(long)]
    pub profile: Option<String>,
    /// The production instance: protected from deletion whatever else is said. An instance of
    /// an Aurora cluster stands for its cluster.
    #[arg(long, value_name = "ID")]
    pub source_instance: Option<String>,
    /// Or the production Aurora PostgreSQL cluster, cloned copy-on-write: protected from
    /// deletion, it and its instances, whatever else is said.
    #[arg(long, value_name = "ID")]
    pub source_cluster: Option<String>,
}

/// Dump production through a throwaway RDS instance restored from a snapshot (always deleted).
///
/// Dump the production database into `dump/prod-<UTC yyyyMMddHHmmss>.dump` without touching
/// production itself: a snapshot of the source instance is restored into a throwaway instance,
/// reached through a tunnel, dumped, and deleted. The dump is a directory (`pg_dump -Fd -j 4`:
/// four tables at a time), or with --jobs 1 a single file (`pg_dump -Fc`); `db load-clone` reads
/// both.
///
/// Steps: (1) reuse the newest available snapshot of the source if younger than
/// --freshness-hours, else create one and wait; (2) restore it into `<source>-clone-<timestamp>`
/// in the source's subnet group and security groups: private, single-AZ, no backups, no deletion
/// protection, gp3, tagged `CreatedBy=xtask-db clone-prod`, `CloneOf`, `CreatedAt`, `ExpiresAt`
/// (an Aurora source, --source-cluster: no snapshot; a copy-on-write clone of the cluster and one
/// instance in it, tagged alike, both deleted at the end); (3) log in: by default
/// a one-time master password set on the throwaway (production's is never read), else IAM tokens
/// (--iam-auth) or the credentials in an SSM parameter or Secrets Manager secret — reaching
/// `pg_dump` only through its environment, with TLS required — and open the tunnel; (4) mask, or
/// with --rehearse run the rehearsal there instead of (5); (5) dump under a temporary name, renamed when complete,
/// private (a 0600 file, or a 0700 directory of 0600 files), into a git-ignored directory; (6) delete the throwaway instance: on success, on any
/// error, on Ctrl-C or SIGTERM at any moment, on a panic. Only instances carrying the tool's tag
/// are ever deleted, never the source.
///
/// Then: `cargo xtask db load-clone` (see docs/runbooks/prod-clone-refactor-testing.md).
#[derive(Debug, Args, Clone)]
#[command(after_help = CLONE_PROD_HELP)]
pub struct CloneProd {
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Create a new snapshot even when a fresh enough one exists.
    #[arg(long)]
    pub fresh_snapshot: bool,
    /// Reuse the newest available snapshot when younger than this (default from config: 24).
    #[arg(long, value_name = "N")]
    pub freshness_hours: Option<u64>,
    /// Instance class of the throwaway instance (default from config: db.t4g.small).
    #[arg(long, value_name = "CLASS")]
    pub instance_class: Option<String>,
    /// The EC2 instance (its `Name` tag, running) the `ssm` tunnel goes through.
    #[arg(long, value_name = "NAME")]
    pub bastion: Option<String>,
    /// Log in with production's credentials read from this SSM parameter (JSON: {"username",
    /// "password", "dbname"}) instead of a one-time password: for IAM policies that forbid
    /// modifying instances.
    #[arg(long, value_name = "NAME", conflicts_with = "credentials_secret")]
    pub credentials_parameter: Option<String>,
    /// Or from this Secrets Manager secret (id or ARN) holding the same JSON.
    #[arg(long, value_name = "ID")]
    pub credentials_secret: Option<String>,
    /// Log in with IAM database authentication (a token from your AWS session, renewed every 5
    /// minutes) instead of a one-time password; the user needs the `rds_iam` role.
    #[arg(long, conflicts_with_all = ["credentials_parameter", "credentials_secret"])]
    pub iam_auth: bool,
    /// With --iam-auth: the database user (default: the instance's master user).
    #[arg(long, value_name = "NAME", requires = "iam_auth")]
    pub db_user: Option<String>,
    /// The database to dump (default: the credentials' `dbname`, else the instance's own).
    #[arg(long, value_name = "NAME")]
    pub dbname: Option<String>,
    /// How to reach the throwaway instance: `ssm` (Session Manager port forwarding through the
    /// bastion; needs session-manager-plugin), `direct` (you are inside the VPC or on its VPN), or
    /// `command` (--tunnel-command).
    #[arg(long, value_enum)]
    pub tunnel: Option<crate::config::TunnelKind>,
    /// The forwarder for `--tunnel command`, with {local_port}, {host} and {port} filled in, e.g.
    /// 'ssh -N -L {local_port}:{host}:{port} bastion'. Run with `sh -c`; stopped at the end.
    #[arg(long, value_name = "COMMAND")]
    pub tunnel_command: Option<String>,
    /// How long the tunnel may take to accept connections, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 90)]
    pub tunnel_timeout: u64,
    /// Print the plan (snapshot choice, clone id, tunnel, dump path) after read-only AWS calls;
    /// create, change and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Dump production as it is, personal data included, although masking rules exist (by
    /// default they are applied on the throwaway instance before pg_dump).
    #[arg(long)]
    pub unmasked: bool,
    /// Dump N tables at a time (`pg_dump -Fd -j N`: a directory, N+1 connections through the
    /// tunnel); 1 writes one `pg_dump -Fc` file over one connection (default from config: 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Instead of dumping: rehearse this branch's pending migrations on the throwaway itself, as
    /// `db rehearse` does on a local copy (traced migrations, the smoke test with the local app
    /// pointed through the tunnel, the gate against a fresh build on the local server), for a
    /// production too big for a laptop. Writes the same report; nothing is dumped (so
    /// nothing is masked). Needs the local server (`cargo xtask db up`) for the gate.
    #[arg(long, conflicts_with_all = ["jobs", "unmasked", "iam_auth"])]
    pub rehearse: bool,
    /// With --rehearse: where the Markdown report goes (default: dump/rehearse/rehearse-<UTC time>.md).
    #[arg(long, value_name = "FILE", requires = "rehearse")]
    pub report: Option<PathBuf>,
    /// With --rehearse: the summary on stdout for people, or the whole report as JSON.
    #[arg(long, value_enum, default_value_t = Format::Text, requires = "rehearse")]
    pub format: Format,
    /// With --rehearse: a lock blocking reads or writes held longer than this is a finding
    /// (default: `rehearse.max_lock_ms`).
    #[arg(long, value_name = "MS", requires = "rehearse")]
    pub max_lock_ms: Option<u64>,
    /// With --rehearse: a statement running longer than this is a finding (default:
    /// `rehearse.max_statement_ms`).
    #[arg(long, value_name = "MS", requires = "rehearse")]
    pub max_statement_ms: Option<u64>,
    /// With --rehearse: leave out both smoke tests.
    #[arg(long, requires = "rehearse")]
    pub no_smoke: bool,
}

/// List the throwaway RDS instances and Aurora clusters this tool created; --prune deletes the overdue ones.
///
/// List the throwaway RDS instances and Aurora clusters `db clone-prod` created (they carry the
/// tag `CreatedBy=xtask-db clone-prod`): kind, id, status, age, expiry, overdue ones flagged.
#[derive(Debug, Args, Clone)]
#[command(after_help = LIST_CLONES_HELP)]
pub struct ListClones {
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Output: a table, or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The old spelling of --format json.
    #[arg(long, hide = true)]
    pub json: bool,
    /// Delete the instances and clusters past their `ExpiresAt` tag (a cluster's instances first;
    /// only ours; never the source instance or cluster, nor an instance of the source cluster;
    /// asks unless -y). Formerly --delete-expired, which still works.
    #[arg(long, alias = "delete-expired")]
    pub prune: bool,
    /// With --prune: say what would be deleted, and delete nothing.
    #[arg(long, requires = "prune")]
    pub dry_run: bool,
    /// Answer yes to the confirmation question (required without a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// How a verb prints its result: for people, or JSON on stdout for machines (`--format json`
/// on every verb that has a result to print).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `--format json`, or the old `--json` (kept for one release, with a line saying so).
    pub fn json(self, old_json_flag: bool) -> bool {
        if old_json_flag {
            eprintln!("warning: --json is deprecated and will be removed: use --format json");
        }
        old_json_flag || self == Format::Json
    }
}

/// Regenerate the schema snapshot and docs/database.md from a fresh database (--check: verify).
///
/// Regenerate what is derived from the migrated schema, from a database built fresh from every
/// migration: the canonical schema snapshot (`schema_snapshot`, reviewed in pull requests),
/// `docs/database.md` (`database_doc`), then `generate_commands` with DATABASE_URL set.
/// `db worktree` runs this last, and only when the migrations changed since the snapshot.
#[derive(Debug, Args)]
#[command(after_help = GENERATE_HELP)]
pub struct Generate {
    /// Write nothing; exit 1 with a diff when a generated file is stale.
    #[arg(long)]
    pub check: bool,
}

/// Give this git worktree its own database, cloned from the golden template, and point .env at it.
///
/// The database is named after the branch (prefix + branch, lowercased, anything outside
/// [a-z0-9_] replaced by `_`, plus a short hash whenever that lost information). If it exists it
/// is kept; otherwise it is cloned from the template under a temporary name and renamed into place
/// only when complete (an error, Ctrl-C or SIGTERM removes the partial copy). Then `.env` gets
/// DATABASE_URL and a PORT no other worktree uses (everything else in it is kept; a worktree
/// without `.env` starts from a copy of the main worktree's), the branch's pending migrations are
/// applied, and `generate_commands` run — both with DATABASE_URL and PORT in their environment.
///
/// With BRANCH (run from any worktree, usually the main one: `cargo xtask db worktree my-feature`,
/// or `just worktree my-feature`), the git worktree of BRANCH is made first — in
/// ../<repo>-<branch> (`/` becomes `-`) or --path, on BRANCH if it exists (a remote branch of that
/// name is tracked), else on a new branch from this worktree's HEAD — and set up as above by the
/// xtask already built here (the app is compiled there only to apply pending migrations). Its
/// builds reuse this worktree's build cache (`seed_build_cache`), seeded first. If BRANCH already
/// has a worktree, that one is set up. The last line on stdout is the directory to cd into. If setting up fails before its
/// database exists, the new worktree (and a branch made for it) is removed again.
#[derive(Debug, Args, Clone)]
#[command(after_help = WORKTREE_HELP)]
pub struct Worktree {
    /// The branch to open a worktree for (see above); without it, the worktree you are in.
    #[arg(value_name = "BRANCH")]
    pub branch: Option<String>,
    /// With BRANCH: where the new worktree goes (default: ../<repo>-<branch>).
    #[arg(long, value_name = "DIR", requires = "branch")]
    pub path: Option<PathBuf>,
    /// Re-clone this worktree's database from the template, keeping its name (asks unless -y;
    /// offers to end this branch's own open connections).
    #[arg(long, conflicts_with = "drop")]
    pub reset: bool,
    /// Name the database after NAME instead of the branch (needed on a detached HEAD).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How to clone: `auto` picks the fastest correct method and never disconnects anyone.
    #[arg(long, value_enum, default_value_t = crate::pg::clone::Strategy::Auto)]
    pub strategy: crate::pg::clone::Strategy,
    /// Do not apply pending migrations (e.g. when one is broken and a database is needed anyway).
    #[arg(long)]
    pub skip_migrate: bool,
    /// Do not run `generate_commands`.
    #[arg(long)]
    pub skip_generate: bool,
    /// Drop this worktree's database instead (asks unless -y); with BRANCH, also remove its worktree
    /// (refused before anything is dropped when git would keep it: changes, untracked files, a lock).
    #[arg(long)]
    pub drop: bool,
    /// Answer yes to the confirmation question (required without a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Print the plan (name, clone method and why, .env changes) and change nothing; with --drop
    /// or --reset, say what would be asked (wins over -y).
    #[arg(long)]
    pub dry_run: bool,
}

/// List the per-branch databases; --prune drops those whose worktree is gone.
///
/// List the per-branch databases: name, branch, size, created, and whether its worktree still
/// exists. Only databases `db worktree` created are listed or ever dropped; the template and its
/// frozen copy never are.
#[derive(Debug, Args)]
#[command(after_help = WORKTREES_HELP)]
pub struct Worktrees {
    /// Drop the databases whose worktree is gone (asks unless -y).
    #[arg(long)]
    pub prune: bool,
    /// With --prune: say what would be dropped, and drop nothing (wins over -y).
    #[arg(long, requires = "prune")]
    pub dry_run: bool,
    /// Answer yes to the confirmation question (required without a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Output: a table, or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The old spelling of --format json.
    #[arg(long, hide = true)]
    pub json: bool,
}

/// Start the embedded local PostgreSQL (created on first use) and point .env at it.
///
/// On first use this creates a cluster (initdb) in `data_dir` (default `.dev-db/` in the main
/// worktree, shared by all worktrees, outside `target/`), listening on a free port on
/// 127.0.0.1 and on a Unix socket in that directory, and writes DATABASE_URL (pointing at the
/// golden template) into the main worktree's `.env`. Later runs reuse the data. When run as root
/// the server runs as `server_user` (default `postgres`), since PostgreSQL refuses root.
#[derive(Debug, Args)]
#[command(after_help = UP_HELP)]
pub struct Up {
    /// Listen on this port instead of the one chosen on first use.
    #[arg(long)]
    pub port: Option<u16>,
}

/// Print this worktree's DATABASE_URL (the environment's, else .env's), password redacted.
#[derive(Debug, Args)]
#[command(after_help = URL_HELP)]
pub struct Url {
    /// Print the password too (the URL then is a secret: keep it out of logs and shell history).
    #[arg(long)]
    pub show_password: bool,
}

/// Open psql on this worktree's database; the password goes in its environment, never in argv.
///
/// Open `psql` on the database DATABASE_URL names (the environment's, else .env's). Arguments
/// after `--` go to psql: `cargo xtask db psql -- -c 'SELECT 1'`. The password (and any other
/// secret URL parameter) reaches psql through its environment, never its command line. Exits
/// with psql's exit code.
#[derive(Debug, Args)]
#[command(after_help = PSQL_HELP)]
pub struct Psql {
    /// Arguments for psql, after `--` (anything before it is refused: it would reach psql where
    /// it breaks the connection).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<std::ffi::OsString>,
}

/// Show the server, the golden template and the per-branch databases.
#[derive(Debug, Args)]
#[command(after_help = STATUS_HELP)]
pub struct Status {
    /// Output: text, or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The old spelling of --format json.
    #[arg(long, hide = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TemplateVerb {
    /// Build the golden template from an empty database, every migration and the seed data.
    #[command(after_help = TEMPLATE_HELP)]
    Create(TemplateCreate),
}

/// Build the golden template: an empty database, every migration (the app's migrator), then the
/// seed files, all under a temporary name that becomes the template only when complete. The
/// fallback for a machine that has no golden database yet.
#[derive(Debug, Args)]
pub struct TemplateCreate {
    /// Replace an existing template (it is swapped out only once the new one is complete).
    /// Asks first: its data is gone afterwards.
    #[arg(long)]
    pub force: bool,
    /// With --force: replace without asking (needed without a terminal).
    #[arg(short = 'y', long = "yes", requires = "force")]
    pub yes: bool,
    /// Say what would be built or replaced, and change nothing (wins over -y).
    #[arg(long)]
    pub dry_run: bool,
}

/// Run the whole test suite against a throwaway PostgreSQL server (what CI runs).
///
/// Run the test suite: start a throwaway PostgreSQL server, build the app, run
/// `cargo test --workspace` against it, then remove the server.
#[derive(Debug, Args)]
#[command(after_help = TEST_HELP)]
pub struct Test {
    /// Arguments passed on to `cargo test` (after `--`), e.g. `cargo xtask test -- template`.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
    /// Keep the throwaway server's directory (for debugging a failure).
    #[arg(long)]
    pub keep: bool,
    /// Where to create the throwaway server (default: the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The clap command tree (for help tests and the README verb-table check).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Xtask::command()
}
