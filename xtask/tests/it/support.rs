//! Test fixtures: a throwaway project (a git repo with the real migrations and seed, its own
//! database prefix) on the real PostgreSQL server that `cargo xtask test` starts, and the real
//! `xtask` binary run inside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const SERVER_ENV: &str = "XTASK_TEST_DATABASE_URL";

/// The test server's URL (maintenance database). Run through `cargo xtask test`.
pub fn server_url() -> String {
    std::env::var(SERVER_ENV).unwrap_or_else(|_| {
        panic!("{SERVER_ENV} is not set: run the tests with `cargo xtask test`, which starts the PostgreSQL server they use")
    })
}

/// The URL of `db` on the test server.
pub fn url_for(db: &str) -> String {
    let base = server_url();
    let (head, _) = base.rsplit_once('/').expect("URL has a path");
    format!("{head}/{}", encode(db))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn password() -> String {
    let url = server_url();
    let creds = url.split("://").nth(1).unwrap().split('@').next().unwrap();
    creds.split_once(':').map(|(_, p)| p.to_string()).unwrap_or_default()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn app_bin() -> PathBuf {
    std::env::var_os("XTASK_TEST_APP_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("app")
    })
}

/// What a run of the binary printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        Run {
            code: out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
    /// Fails with `code`; the last stderr line is one `error: …` line that mentions `needle`.
    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        let last = self.stderr.lines().last().unwrap_or("");
        assert!(last.starts_with("error: "), "last stderr line is not an error: {:?}", self.stderr);
        assert!(last.contains(needle), "{needle:?} not in {last:?}");
        self
    }
    /// A negative verdict: exit 1, the last stderr line says so (and is not an error line).
    #[track_caller]
    pub fn verdict(self, needle: &str) -> Run {
        assert_eq!(self.code, 1, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        let last = self.stderr.lines().last().unwrap_or("");
        assert!(!last.starts_with("error: "), "a verdict printed as an error: {last:?}");
        assert!(last.contains(needle), "{needle:?} not in {last:?}");
        self
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A throwaway repository with this project's migrations and seed.
pub struct Project {
    pub dir: PathBuf,
    pub prefix: String,
}

impl Project {
    /// `tag` (short, lowercase) keeps database names of tests apart.
    pub fn new(tag: &str) -> Project {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("t{}{n}_{tag}_", std::process::id() % 10_000);
        let dir = std::env::temp_dir().join(format!("xtask-it-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = repo_root();
        copy_dir(&root.join("migrations"), &dir.join("migrations"));
        std::fs::copy(root.join("app/seed.sql"), dir.join("seed.sql")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[workspace]\nmembers = []\n\n[workspace.metadata.db]\nprefix = \"{prefix}\"\ntemplate = \"{prefix}template\"\n\
                 migrate_command = [\"env\", \"APP_MIGRATIONS_DIR=migrations\", \"{}\", \"migrate\"]\nseed_files = [\"seed.sql\"]\n\
                 # Background refills would race the tests' exact lists of databases; tests that\n\
                 # exercise them turn this on.\nspare_clone = false\n",
                app_bin().display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join(".gitignore"), ".env\n/dump/\n/.dev-db/\n").unwrap();
        std::fs::write(
            dir.join(".env"),
            format!("# test project\nDATABASE_URL={}\n", url_for(&format!("{prefix}template"))),
        )
        .unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["add", "-A"]);
        git(&dir, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "init"]);
        Project { dir, prefix }
    }

    pub fn template(&self) -> String {
        format!("{}template", self.prefix)
    }

    /// The `xtask` binary, run in `cwd` with a clean environment plus `env`.
    pub fn xtask_in(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run::from(self.command(cwd, args, env).output().unwrap())
    }

    pub fn xtask(&self, args: &[&str]) -> Run {
        self.xtask_in(&self.dir, args, &[])
    }

    pub fn command(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args).current_dir(cwd).stdin(Stdio::null());
        for var in [
            "DATABASE_URL",
            "WORKTREE_TEMPLATE_DB",
            "XTASK_DB_PREFIX",
            "XTASK_DB_DATA_DIR",
            "XTASK_PG_BINDIR",
            "PGPASSWORD",
            "APP_DB_NAME_OVERRIDE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        cmd
    }

    /// Databases on the server with this project's prefix.
    pub fn databases(&self) -> Vec<String> {
        sql(
            "postgres",
            &format!("SELECT datname FROM pg_database WHERE starts_with(datname, '{}') ORDER BY 1", self.prefix),
        )
        .lines()
        .map(str::to_string)
        .collect()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        for db in self.databases() {
            let _ = try_sql("postgres", &format!("ALTER DATABASE \"{db}\" IS_TEMPLATE false"));
            let _ = try_sql("postgres", &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `pg_dump -Fc` of `db` into `file` (the password through the environment).
pub fn dump(db: &str, file: &Path) {
    dump_as(db, file, &["-Fc"]);
}

/// `pg_dump FORMAT… -f PATH` of `db` (`-Fd -j 2`: a directory).
pub fn dump_as(db: &str, file: &Path, format: &[&str]) {
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let url = url_for(db).replacen(&format!(":{}@", password()), "@", 1);
    let out = Command::new("pg_dump")
        .args(format)
        .arg("-f")
        .arg(file)
        .args(["-d", &url])
        .env("PGPASSWORD", password())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs SQL on the test server; rows as `|`-separated lines.
#[track_caller]
pub fn sql(db: &str, query: &str) -> String {
    try_sql(db, query).unwrap_or_else(|e| panic!("{e}"))
}

pub fn try_sql(db: &str, query: &str) -> Result<String, String> {
    let out = psql(db).args(["-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query]).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(format!("psql on {db}: {query}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// `psql -X -q` on `db` of the test server. Like the tool itself: the password travels in the
/// environment, never in argv.
pub fn psql(db: &str) -> Command {
    // The program itself, as the tool finds it (not Debian's Perl wrapper: ~25 ms a call).
    static PSQL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let program = PSQL.get_or_init(|| xtask::pg::tools::find("psql").unwrap_or_else(|_| "psql".into()));
    let url = url_for(db).replacen(&format!(":{}@", password()), "@", 1);
    let mut cmd = Command::new(program);
    cmd.args(["-X", "-q", "-d", &url]).env("PGPASSWORD", password());
    cmd
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
