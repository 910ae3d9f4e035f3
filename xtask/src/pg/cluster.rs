//! The embedded local PostgreSQL cluster: `cargo xtask db up | down`.
//!
//! Layout of its directory (default `.dev-db/` in the main worktree, shared by all worktrees,
//! outside `target/` so `cargo clean` cannot destroy the golden template):
//!
//! ```text
//! cluster.json   port, superuser, version, socket directory      (readable)
//! password       the superuser's password                        (0600)
//! data/          PGDATA                                          (server user, 0700)
//! run/           Unix socket and server.log                      (server user)
//! ```
//!
//! PostgreSQL refuses to run as root. When we are root, `initdb`, `pg_ctl` and the server run
//! as the unprivileged `server_user` (default `postgres`): uid and gid are switched in the child
//! before exec, no `su`/`sudo` needed.

use std::ffi::{CString, OsStr};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::tools;
use super::PgUrl;
use crate::error::{fail, WithFix};
use crate::proc;

pub const SUPERUSER: &str = "postgres";
/// A Unix socket path must fit in `sun_path` (107 bytes plus NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub port: u16,
    pub superuser: String,
    pub major: u32,
    /// `None` when the directory's path is too long for a socket.
    pub socket_dir: Option<PathBuf>,
}

pub struct Cluster {
    pub root: PathBuf,
    server_user: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// No cluster has been created in this directory.
    Absent,
    Stopped,
    Running {
        pid: u32,
    },
}

/// Settings for a new cluster.
pub struct InitOptions<'a> {
    pub port: Option<u16>,
    /// Extra `postgresql.conf` lines, e.g. `fsync = off` for a throwaway test cluster.
    pub extra_conf: &'a [&'a str],
}

impl Cluster {
    pub fn new(root: PathBuf, server_user: &str) -> Cluster {
        Cluster { root, server_user: server_user.to_string() }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn log_file(&self) -> PathBuf {
        self.run_dir().join("server.log")
    }
    fn info_file(&self) -> PathBuf {
        self.root.join("cluster.json")
    }
    fn password_file(&self) -> PathBuf {
        self.root.join("password")
    }

    pub fn info(&self) -> Result<ClusterInfo> {
        let text = std::fs::read_to_string(self.info_file())
            .with_context(|| format!("reading {}", self.info_file().display()))
            .fix(
                "the cluster directory is incomplete: run `cargo xtask db up` to repair, or remove it to start over",
            )?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", self.info_file().display()))
    }

    fn password(&self) -> Result<String> {
        let pw = std::fs::read_to_string(self.password_file())
            .with_context(|| format!("reading {}", self.password_file().display()))?;
        Ok(pw.trim().to_string())
    }

    /// The URL of database `db` on this cluster, over TCP on the loopback interface.
    pub fn url(&self, db: &str) -> Result<PgUrl> {
        let info = self.info()?;
        let pw = self.password()?;
        PgUrl::parse(&format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            info.superuser,
            super::url::encode(&pw),
            info.port,
            super::url::encode(db)
        ))
    }

    pub fn state(&self) -> Result<State> {
        if !self.data_dir().join("PG_VERSION").exists() {
            return Ok(State::Absent);
        }
        let data = self.data_dir();
        let mut cmd = self.server_cmd("pg_ctl", &[OsStr::new("status"), OsStr::new("-D"), data.as_os_str()])?;
        match proc::capture(&mut cmd, None) {
            Ok(out) => {
                let pid =
                    out.split("PID: ").nth(1).and_then(|s| s.split(')').next()).and_then(|p| p.trim().parse().ok());
                Ok(State::Running { pid: pid.unwrap_or(0) })
            }
            Err(_) => Ok(State::Stopped),
        }
    }

    /// `initdb` a new cluster. On failure the directory is left as it was found.
    pub fn init(&self, opts: &InitOptions) -> Result<ClusterInfo> {
        let bindir = tools::server_bindir()?;
        let major = tools::major_version(&bindir.join("initdb"))?;
        let user = self.server_account()?;
        std::fs::create_dir_all(&self.root).with_context(|| format!("creating {}", self.root.display()))?;
        if let Some(u) = &user {
            check_reachable(&self.root, u)?;
        }
        let created = Created::new(vec![self.data_dir(), self.run_dir(), self.info_file(), self.password_file()]);

        let password = random_password()?;
        write_private(&self.password_file(), &password)?;
        std::fs::create_dir_all(self.run_dir())?;
        let pwfile = self.run_dir().join("initdb.pw");
        write_private(&pwfile, &password)?;
        std::fs::create_dir_all(self.data_dir())?;
        std::fs::set_permissions(self.data_dir(), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        if let Some(u) = &user {
            chown(&self.run_dir(), u)?;
            chown(&self.data_dir(), u)?;
            chown(&pwfile, u)?;
        }
        let (data, pwfile_arg) = (self.data_dir(), format!("--pwfile={}", pwfile.display()));
        let options = ["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--auth=scram-sha-256", "--no-instructions"];
        let args = [&[OsStr::new("-D"), data.as_os_str()][..], &options.map(OsStr::new), &[OsStr::new(&pwfile_arg)]];
        let mut cmd = self.server_cmd("initdb", &args.concat())?;
        let result = proc::capture(&mut cmd, None);
        let _ = std::fs::remove_file(&pwfile);
        result?;

        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let socket_dir = self.socket_dir();
        let mut conf = format!(
            "\n# Written by `cargo xtask db up`: a local development server.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{}'\n",
            socket_dir.as_deref().map(|d| d.display().to_string()).unwrap_or_default().replace('\'', "''")
        );
        for line in opts.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = self.data_dir().join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;

        let info = ClusterInfo { port, superuser: SUPERUSER.into(), major, socket_dir };
        std::fs::write(self.info_file(), serde_json::to_string_pretty(&info)? + "\n")?;
        created.keep();
        Ok(info)
    }

    /// Writes a new self-signed certificate (made by `openssl`) where the server looks for it with
    /// `ssl = on`: the test server stands in for RDS, which clients reach with `sslmode=require`.
    pub fn make_certificate(&self) -> Result<()> {
        let data = self.data_dir();
        let (key, cert) = (data.join("server.key"), data.join("server.crt"));
        let sh = xshell::Shell::new().context("reading the current directory")?;
        let mut cmd: Command = xshell::cmd!(
            sh,
            "openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=localhost -keyout {key} -out {cert}"
        )
        .into();
        proc::capture(&mut cmd, None).map_err(|e| {
            fail(
                format!("could not make a TLS certificate: {e:#}"),
                "install openssl (Debian/Ubuntu: `apt-get install openssl`)",
            )
        })?;
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if let Some(u) = self.server_account()? {
            chown(&key, &u)?;
            chown(&cert, &u)?;
        }
        Ok(())
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        let info = self.info()?;
        if TcpListener::bind(("127.0.0.1", info.port)).is_err() {
            return Err(fail(
                format!("port {} on 127.0.0.1 is taken by another program", info.port),
                "stop that program, or move the cluster with `cargo xtask db up --port N` (then re-run `cargo xtask db worktree` in each worktree)",
            ));
        }
        let (data, log) = (self.data_dir(), self.log_file());
        let args = [OsStr::new("start"), OsStr::new("-D"), data.as_os_str(), OsStr::new("-l"), log.as_os_str()];
        let mut cmd = self.server_cmd("pg_ctl", &[&args[..], &["-w", "-t", "60", "-s"].map(OsStr::new)].concat())?;
        proc::capture(&mut cmd, None).map_err(|e| {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
            e.context(format!("starting PostgreSQL (log {}: {tail})", self.log_file().display()))
        })?;
        Ok(())
    }

    /// Changes the port of a stopped cluster.
    pub fn set_port(&self, port: u16) -> Result<()> {
        let mut info = self.info()?;
        let conf_path = self.data_dir().join("postgresql.conf");
        let conf = std::fs::read_to_string(&conf_path)?;
        let conf = conf.replace(&format!("\nport = {}\n", info.port), &format!("\nport = {port}\n"));
        std::fs::write(&conf_path, conf)?;
        info.port = port;
        std::fs::write(self.info_file(), serde_json::to_string_pretty(&info)? + "\n")?;
        Ok(())
    }

    /// Stops the server (fast shutdown: open sessions are disconnected, nothing is lost).
    pub fn stop(&self) -> Result<()> {
        let data = self.data_dir();
        let args = [OsStr::new("stop"), OsStr::new("-D"), data.as_os_str()];
        let mut cmd =
            self.server_cmd("pg_ctl", &[&args[..], &["-m", "fast", "-w", "-t", "60", "-s"].map(OsStr::new)].concat())?;
        proc::capture(&mut cmd, None).context("stopping PostgreSQL")?;
        Ok(())
    }

    /// The socket directory, if its path is short enough for a Unix socket.
    fn socket_dir(&self) -> Option<PathBuf> {
        let dir = std::path::absolute(self.run_dir()).ok()?;
        (dir.as_os_str().len() + "/.s.PGSQL.65535".len() <= MAX_SOCKET_PATH).then_some(dir)
    }

    /// `PROGRAM ARGS…`, a server program (`initdb`, `pg_ctl`) of the server's bin directory, in
    /// the cluster's directory, without the libpq variables that would redirect it, run as the
    /// unprivileged server user when we are root. Written as xshell's `cmd!` (argv as written,
    /// no shell) and run by the caller through [`proc`]: every `initdb` and `pg_ctl` a cluster
    /// runs is built here.
    fn server_cmd<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Result<Command> {
        let program = tools::server_bindir()?.join(program);
        let sh = xshell::Shell::new().context("reading the current directory")?;
        sh.change_dir(&self.root);
        let mut cmd = xshell::cmd!(sh, "{program} {args...}");
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE", "PGPASSWORD"] {
            cmd = cmd.env_remove(var);
        }
        let mut cmd = Command::from(cmd);
        if let Some(u) = self.server_account()? {
            use std::os::unix::process::CommandExt;
            cmd.uid(u.uid).gid(u.gid).env("HOME", &u.home).env("USER", &u.name).env("LOGNAME", &u.name);
        }
        Ok(cmd)
    }

    /// The account to run as: `None` when we are not root (we run as ourselves).
    fn server_account(&self) -> Result<Option<Account>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        Account::lookup(&self.server_user).map(Some)
    }
}

#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl Account {
    fn lookup(name: &str) -> Result<Account> {
        let c = CString::new(name).context("user name contains NUL")?;
        // SAFETY: getpwnam returns NULL or a pointer to static storage, read immediately.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if pw.is_null() {
            return Err(fail(
                format!("running as root, and there is no `{name}` account to run PostgreSQL as (it refuses root)"),
                format!("create it (`useradd --system {name}`) or name another unprivileged account with `--set server_user=NAME`"),
            ));
        }
        // SAFETY: non-null result of getpwnam.
        let pw = unsafe { &*pw };
        let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) }.to_string_lossy().into_owned();
        if pw.pw_uid == 0 {
            return Err(fail(
                format!("server_user `{name}` is root, which PostgreSQL refuses"),
                "set `server_user` to an unprivileged account",
            ));
        }
        Ok(Account { name: name.to_string(), uid: pw.pw_uid, gid: pw.pw_gid, home: home.into() })
    }
}

/// The server user must be able to walk down to the cluster directory.
fn check_reachable(dir: &Path, user: &Account) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::path::absolute(dir)?;
    for ancestor in dir.ancestors() {
        let m = std::fs::metadata(ancestor)?;
        let mode = m.mode();
        let ok = mode & 0o001 != 0
            || (m.uid() == user.uid && mode & 0o100 != 0)
            || (m.gid() == user.gid && mode & 0o010 != 0);
        if !ok {
            return Err(fail(
                format!("the server user `{}` cannot reach {}: {} is not searchable by it", user.name, dir.display(), ancestor.display()),
                format!("put the cluster elsewhere with `--set data_dir=/var/tmp/<name>` (or XTASK_DB_DATA_DIR), or `chmod o+x {}`", ancestor.display()),
            ));
        }
    }
    Ok(())
}

fn chown(path: &Path, user: &Account) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).with_context(|| format!("chown {}", path.display()))
}

fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

fn random_password() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    Ok(bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Paths created by a step; removed on drop unless kept.
struct Created {
    paths: Vec<PathBuf>,
    keep: bool,
}
impl Created {
    fn new(paths: Vec<PathBuf>) -> Created {
        let fresh = paths.into_iter().filter(|p| !p.exists()).collect();
        Created { paths: fresh, keep: false }
    }
    fn keep(mut self) {
        self.keep = true;
    }
}
impl Drop for Created {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for p in &self.paths {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

/// A cluster of its own in a new directory `<parent>/<name>-<pid>` (reachable by the server
/// user), started; stopped and removed on drop — on success, error, interrupt or panic alike.
pub struct Throwaway {
    pub cluster: Cluster,
    /// Keep the directory after stopping (for debugging a failure).
    pub keep: bool,
}

impl Throwaway {
    pub fn start(parent: &Path, name: &str, extra_conf: &[&str]) -> Result<Throwaway> {
        Throwaway::start_with(parent, name, extra_conf, false)
    }

    /// [`Throwaway::start`], with TLS on when `tls` (see [`Cluster::make_certificate`]).
    pub fn start_with(parent: &Path, name: &str, extra_conf: &[&str], tls: bool) -> Result<Throwaway> {
        use std::os::unix::fs::PermissionsExt;
        let dir = parent.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        // Run as the default unprivileged account when we are root (as `db up` does).
        let t = Throwaway { cluster: Cluster::new(dir, "postgres"), keep: false };
        let mut conf = extra_conf.to_vec();
        if tls {
            conf.push("ssl = on");
        }
        t.cluster.init(&InitOptions { port: None, extra_conf: &conf })?;
        if tls {
            t.cluster.make_certificate()?;
        }
        t.cluster.start()?;
        Ok(t)
    }

    pub fn dir(&self) -> &Path {
        &self.cluster.root
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if matches!(self.cluster.state(), Ok(State::Running { .. })) {
            if let Err(e) = self.cluster.stop() {
                eprintln!("warning: stopping the throwaway server in {}: {e:#}", self.dir().display());
            }
        }
        if self.keep {
            eprintln!("throwaway server directory kept: {}", self.dir().display());
        } else {
            let _ = std::fs::remove_dir_all(self.dir());
        }
    }
}
