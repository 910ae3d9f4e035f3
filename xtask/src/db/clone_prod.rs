//! `db clone-prod` and `db list-clones`, this side of AWS: every setting and every local
//! prerequisite is checked at once — all problems reported in one run, in well under a second —
//! before the AWS tool (`xtask/aws`, whose first build compiles the AWS SDK for minutes) is built
//! or AWS is asked anything. The AWS tool then runs with the same command line and takes its
//! settings from [`check`], so both sides decide from one function.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use super::Ctx;
use crate::config::{AwsConfig, TunnelKind};
use crate::error::Problems;
use crate::flags::{AwsArgs, CloneProd, ListClones};
use crate::pg::tools;

pub fn run(ctx: &Ctx, flags: &CloneProd) -> Result<()> {
    check(ctx, flags)?;
    super::aws::run(ctx)
}

pub fn list(ctx: &Ctx, flags: &ListClones) -> Result<()> {
    let mut problems = Problems::new("list-clones cannot start");
    check_aws(&ctx.config.aws, &flags.aws, &mut problems);
    problems.into_result()?;
    super::aws::run(ctx)
}

/// How the tunnel goes, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Direct,
    /// A forwarder of the user's own: the command line template.
    Command(String),
    /// SSM port forwarding through the EC2 instance of this `Name` tag.
    Ssm {
        bastion: String,
    },
}

/// A secret stored in AWS: an SSM parameter (decrypted) or a Secrets Manager secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Parameter(String),
    Secret(String),
}

impl fmt::Display for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stored::Parameter(n) => write!(f, "SSM parameter `{n}`"),
            Stored::Secret(n) => write!(f, "Secrets Manager secret `{n}`"),
        }
    }
}

/// How `pg_dump` and `psql` log in to the throwaway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A fresh master password, generated here and set on the throwaway right after its restore
    /// (the default: nobody needs to read production's credentials).
    OneTime,
    /// IAM database authentication as this user (default: the master user), a token per
    /// connection.
    Iam { user: Option<String> },
    /// Production's credentials, read from SSM or Secrets Manager (for teams whose IAM policy
    /// forbids modifying instances).
    Stored(Stored),
}

/// What a `clone-prod` run uses, each setting from its flag or else from
/// `[workspace.metadata.db.aws]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub tunnel: Route,
    pub tunnel_timeout: Duration,
    pub access: Access,
    /// The database to dump (else the credentials' `dbname`, else the instance's own).
    pub dbname: Option<String>,
    pub instance_class: String,
    /// Reuse the newest snapshot when younger than this.
    pub freshness: Duration,
    /// The throwaway instance's `ExpiresAt`, from its creation.
    pub ttl: Duration,
    /// `pg_dump --jobs`: tables dumped at a time (1: one `-Fc` file).
    pub dump_jobs: u32,
}

/// Where the masking key comes from.
pub enum KeyFrom {
    /// Read from this environment variable (here, at the check).
    Env { var: String, key: Vec<u8> },
    /// Read from AWS by the AWS tool.
    Stored(Stored),
}

impl fmt::Debug for KeyFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFrom::Env { var, .. } => write!(f, "Env({var}, ***)"),
            KeyFrom::Stored(s) => write!(f, "Stored({s})"),
        }
    }
}

/// Masking on the throwaway before the dump.
#[derive(Debug)]
pub struct MaskPlan {
    pub rules: std::collections::BTreeMap<String, crate::mask::Rule>,
    pub key: KeyFrom,
}

/// What production is, as configured (`source_instance` or `source_cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An RDS instance: a snapshot of it is restored. One that belongs to an Aurora cluster is
    /// taken as its cluster (the AWS tool finds out, and says so in the plan).
    Instance(String),
    /// An Aurora PostgreSQL cluster: a copy-on-write clone of it, plus one instance in it.
    Cluster(String),
}

impl Source {
    pub fn id(&self) -> &str {
        match self {
            Source::Instance(id) | Source::Cluster(id) => id,
        }
    }
}

/// The source: the flags decide when either is given, else the configuration; exactly one of
/// an instance and a cluster.
pub fn source(args: &AwsArgs, conf: &AwsConfig, problems: &mut Problems) -> Option<Source> {
    let from_flags = args.source_instance.is_some() || args.source_cluster.is_some();
    let (instance, cluster, whence) = if from_flags {
        (&args.source_instance, &args.source_cluster, "--source-instance and --source-cluster")
    } else {
        (&conf.source_instance, &conf.source_cluster, "[workspace.metadata.db.aws]")
    };
    match (instance, cluster) {
        (Some(i), None) => Some(Source::Instance(i.clone())),
        (None, Some(c)) => Some(Source::Cluster(c.clone())),
        (None, None) => {
            problems.add(
                "no source instance is configured",
                "pass --source-instance ID (an RDS instance) or --source-cluster ID (an Aurora cluster), or set `source_instance` or `source_cluster` in [workspace.metadata.db.aws]",
            );
            None
        }
        (Some(i), Some(c)) => {
            problems.add(
                format!("both a source instance (`{i}`) and a source cluster (`{c}`) are given ({whence})"),
                "keep one: `source_instance` for an RDS instance, `source_cluster` for an Aurora cluster (or pass the one to use as a flag)",
            );
            None
        }
    }
}

/// Everything `clone-prod` needs that is known before AWS is asked.
#[derive(Debug)]
pub struct Checked {
    pub settings: Settings,
    /// The production instance or Aurora cluster.
    pub source: Source,
    pub dump_dir: PathBuf,
    pub pg_dump: PathBuf,
    /// Its major version: the newest server it can dump.
    pub pg_dump_major: u32,
    pub psql: PathBuf,
    /// `session-manager-plugin`, for the `ssm` tunnel.
    pub plugin: Option<PathBuf>,
    /// `None`: no rules, or --unmasked.
    pub mask: Option<MaskPlan>,
}

/// Every problem with the settings and the local prerequisites, all at once; nothing is asked of
/// AWS, nothing built, created or changed.
pub fn check(ctx: &Ctx, flags: &CloneProd) -> Result<Checked> {
    let conf = &ctx.config.aws;
    let mut problems = Problems::new("clone-prod cannot start (nothing was built, created or changed)");
    check_aws(conf, &flags.aws, &mut problems);
    let source = source(&flags.aws, conf, &mut problems);
    let settings = resolve(flags, conf, &mut problems);
    let dump_dir = ctx.config.root.join(&conf.dump_dir);
    if let Err(e) = check_ignored(&ctx.config.root, &dump_dir) {
        problems.add_error(e);
    }
    let found = |p: &str, problems: &mut Problems| tools::find(p).map_err(|e| problems.add_error(e)).ok();
    let pg_dump = found("pg_dump", &mut problems);
    let psql = found("psql", &mut problems);
    let pg_dump_major =
        pg_dump.as_deref().and_then(|p| tools::major_version(p).map_err(|e| problems.add_error(e)).ok());
    let plugin = match flags.tunnel.unwrap_or(conf.tunnel) {
        TunnelKind::Ssm => match tools::on_path(PLUGIN) {
            Some(p) => Some(p),
            None => {
                problems.add(format!("`{PLUGIN}` is not on PATH (the ssm tunnel needs it)"), PLUGIN_INSTALL);
                None
            }
        },
        _ => None,
    };
    // A rehearsal on the throwaway dumps nothing: no masking. Its gate builds this branch fresh on
    // the local server: that must answer now, not after the restore. Its connections come later
    // than an IAM token's 15 minutes.
    let mask = mask_plan(ctx, flags.unmasked || flags.rehearse, &mut problems);
    if flags.rehearse && matches!(settings.as_ref().map(|s| &s.access), Some(Access::Iam { .. })) {
        problems.add(
            "--rehearse cannot log in with IAM tokens (`iam_auth`): they admit new connections for 15 minutes, and the rehearsal's come later",
            "leave out iam_auth for this run (a one-time password is the default), or name stored credentials",
        );
    }
    if flags.rehearse {
        if let Err(e) = ctx.server() {
            let r = crate::error::report(&e);
            problems.add(
                format!(
                    "--rehearse needs the local server for the gate's fresh build: {}",
                    r.line.trim_start_matches("error: ").split(" — ").next().unwrap_or_default()
                ),
                "start it with `cargo xtask db up`",
            );
        }
    }
    problems.into_result()?;
    let none = || anyhow::anyhow!("a check passed without its value (a bug)");
    Ok(Checked {
        settings: settings.ok_or_else(none)?,
        source: source.ok_or_else(none)?,
        dump_dir,
        pg_dump: pg_dump.ok_or_else(none)?,
        pg_dump_major: pg_dump_major.ok_or_else(none)?,
        psql: psql.ok_or_else(none)?,
        plugin,
        mask: mask.ok_or_else(none)?,
    })
}

pub const PLUGIN: &str = "session-manager-plugin";
const PLUGIN_INSTALL: &str = "install the Session Manager plugin (https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html; macOS: `brew install --cask session-manager-plugin`), or use --tunnel command / --tunnel direct";

/// The masking rules and where the key comes from; `Some(None)` when nothing is masked.
fn mask_plan(ctx: &Ctx, unmasked: bool, problems: &mut Problems) -> Option<Option<MaskPlan>> {
    let mc = &ctx.config.mask;
    let rules = match crate::mask::parse_rules(&mc.rules) {
        Ok(r) => r,
        Err(e) => {
            problems.add(format!("{e:#}"), "fix [workspace.metadata.db.mask.rules] in Cargo.toml");
            return None;
        }
    };
    let stored = match (&mc.key_parameter, &mc.key_secret) {
        (Some(_), Some(_)) => {
            problems.add(
                "both `mask.key_parameter` and `mask.key_secret` are configured",
                "keep one of them in [workspace.metadata.db.mask]",
            );
            return None;
        }
        (Some(p), None) => Some(Stored::Parameter(p.clone())),
        (None, Some(s)) => Some(Stored::Secret(s.clone())),
        (None, None) => None,
    };
    if rules.is_empty() || unmasked {
        return Some(None);
    }
    let key = match stored {
        Some(s) => KeyFrom::Stored(s),
        None => match crate::mask::key_from_env(&mc.key_env, "pass --unmasked to take production as it is") {
            Ok(key) => KeyFrom::Env { var: mc.key_env.clone(), key },
            Err(e) => {
                problems.add_error(e);
                return None;
            }
        },
    };
    Some(Some(MaskPlan { rules, key }))
}

/// A flag wins over the configuration; what is missing, or configured twice over, is a problem
/// naming the flag and the configuration key.
pub fn resolve(flags: &CloneProd, conf: &AwsConfig, problems: &mut Problems) -> Option<Settings> {
    let before = problems.list.len();
    let access = access(flags, conf, problems);
    let tunnel = match flags.tunnel.unwrap_or(conf.tunnel) {
        TunnelKind::Direct => Some(Route::Direct),
        TunnelKind::Command => match flags.tunnel_command.clone().or_else(|| conf.tunnel_command.clone()) {
            None => {
                problems.add(
                    "--tunnel command needs --tunnel-command",
                    "e.g. --tunnel-command 'ssh -N -L {local_port}:{host}:{port} bastion' (or `tunnel_command` in [workspace.metadata.db.aws])",
                );
                None
            }
            Some(t) => {
                let missing: Vec<&str> = ["{local_port}", "{host}"].into_iter().filter(|p| !t.contains(p)).collect();
                if missing.is_empty() {
                    Some(Route::Command(t))
                } else {
                    problems.add(
                        format!("the tunnel command has no {}: `{t}`", missing.join(" and no ")),
                        "clone-prod fills in the local port it listens on and the throwaway's host, e.g. 'ssh -N -L {local_port}:{host}:{port} bastion'",
                    );
                    None
                }
            }
        },
        TunnelKind::Ssm => match flags.bastion.clone().or_else(|| conf.bastion.clone()) {
            Some(bastion) => Some(Route::Ssm { bastion }),
            None => {
                problems.add(
                    "the ssm tunnel needs a bastion",
                    "pass --bastion NAME (the EC2 instance's Name tag), or set `bastion` in [workspace.metadata.db.aws]",
                );
                None
            }
        },
    };
    let instance_class = flags.instance_class.clone().unwrap_or_else(|| conf.instance_class.clone());
    if !instance_class.starts_with("db.") {
        problems.add(
            format!("`{instance_class}` is not an RDS instance class"),
            "name one like db.t4g.small (--instance-class, or `instance_class` in [workspace.metadata.db.aws])",
        );
    }
    let dump_jobs = flags.jobs.unwrap_or(conf.dump_jobs);
    if !(1..=64).contains(&dump_jobs) {
        problems.add(
            format!("`dump_jobs = {dump_jobs}` is out of range"),
            "set 1 to 64 tables dumped at a time in [workspace.metadata.db.aws] (or pass --jobs N)",
        );
    }
    if problems.list.len() > before {
        return None;
    }
    Some(Settings {
        tunnel: tunnel?,
        tunnel_timeout: Duration::from_secs(flags.tunnel_timeout.max(1)),
        access: access?,
        dbname: flags.dbname.clone().or_else(|| conf.dbname.clone()),
        instance_class,
        freshness: Duration::from_secs(flags.freshness_hours.unwrap_or(conf.freshness_hours) * 3600),
        ttl: Duration::from_secs(conf.clone_ttl_hours.max(1) * 3600),
        dump_jobs,
    })
}

/// How to log in: the flags decide when any of them is given, else the configuration; by
/// default a one-time password.
fn access(flags: &CloneProd, conf: &AwsConfig, problems: &mut Problems) -> Option<Access> {
    let from_flags = flags.iam_auth || flags.credentials_parameter.is_some() || flags.credentials_secret.is_some();
    let (iam, parameter, secret, whence) = if from_flags {
        (flags.iam_auth, &flags.credentials_parameter, &flags.credentials_secret, "flags")
    } else {
        (conf.iam_auth, &conf.credentials_parameter, &conf.credentials_secret, "[workspace.metadata.db.aws]")
    };
    let stored = match (parameter, secret) {
        (Some(p), None) => Some(Stored::Parameter(p.clone())),
        (None, Some(s)) => Some(Stored::Secret(s.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => {
            problems.add(
                format!("both a credentials parameter and a credentials secret are given ({whence})"),
                "keep one of them (`credentials_parameter` or `credentials_secret`), or pass the one to use as a flag",
            );
            return None;
        }
    };
    let user = flags.db_user.clone().or_else(|| conf.db_user.clone());
    match (iam, stored) {
        (true, Some(s)) => {
            problems.add(
                format!("IAM authentication and stored credentials ({s}) are both asked for ({whence})"),
                "choose one: --iam-auth, or --credentials-parameter/--credentials-secret (or neither: a one-time password)",
            );
            None
        }
        (true, None) => Some(Access::Iam { user }),
        (false, Some(s)) => Some(Access::Stored(s)),
        (false, None) => Some(Access::OneTime),
    }
}

/// What every AWS verb needs before the SDK runs: a region, and the named profile existing.
pub fn check_aws(conf: &AwsConfig, args: &AwsArgs, problems: &mut Problems) {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    // As the SDK reads them (aws-config): the profile from --profile, the configuration, else
    // AWS_PROFILE (not AWS_DEFAULT_PROFILE, which only the CLI reads); both files merged.
    let profile = args.profile.clone().or_else(|| conf.profile.clone()).or_else(|| env("AWS_PROFILE"));
    let config = aws_file("AWS_CONFIG_FILE", "config");
    let credentials = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let name = profile.as_deref().unwrap_or("default");
    let mut found = None;
    for section_name in [format!("profile {name}"), name.to_string()] {
        // `[profile default]` or `[default]` in the config file; `[name]` only for the default
        // profile there (the SDK ignores `[name]` of another profile in it).
        if section_name == name && name != "default" {
            continue;
        }
        if let Some(lines) = section(config.as_deref(), &section_name) {
            found.get_or_insert_with(Vec::new).extend(lines);
        }
    }
    if let Some(lines) = section(credentials.as_deref(), name) {
        found.get_or_insert_with(Vec::new).extend(lines);
    }
    // Environment credentials come first in the SDK's chain: a profile is not needed then.
    let env_credentials = env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some();
    if let (Some(p), None, false) = (&profile, &found, env_credentials) {
        problems.add(
            format!("the AWS profile `{p}` is in neither {} nor {}", shown(&config), shown(&credentials)),
            format!("create it (`aws configure sso --profile {p}`), or name another with --profile / AWS_PROFILE"),
        );
    }
    let region = args
        .region
        .clone()
        .or_else(|| conf.region.clone())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"));
    let profile_region = found.iter().flatten().find(|(k, _)| k == "region").map(|(_, v)| v.clone());
    // On EC2 or in a container the SDK may take the region from the instance's metadata.
    if region.is_none() && profile_region.is_none() && !on_aws_compute() {
        problems.add(
            "no AWS region is configured",
            "pass --region, set AWS_REGION, set `region` in [workspace.metadata.db.aws], or give the profile a region",
        );
    }
}

/// Whether this machine looks like EC2 or ECS/Lambda, where the region can come from metadata.
fn on_aws_compute() -> bool {
    let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    // The SDK asks the instance metadata only when it may.
    let imds = !std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    env("AWS_EXECUTION_ENV")
        || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || env("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || imds && read("/sys/devices/virtual/dmi/id/board_asset_tag").trim().starts_with("i-")
        || imds && read("/sys/hypervisor/uuid").trim().to_ascii_lowercase().starts_with("ec2")
        || imds && read("/sys/devices/virtual/dmi/id/sys_vendor").contains("Amazon EC2")
}

fn shown(p: &Option<PathBuf>) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "~/.aws (HOME is not set)".into())
}

/// `$VAR`, else `~/.aws/<name>`.
fn aws_file(var: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws").join(name)))
}

/// The `key = value` lines of `[name]` in an AWS INI file; `None` when the file or the section
/// does not exist.
fn section(file: Option<&Path>, name: &str) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(file?).ok()?;
    let mut found = None;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = head.split_whitespace().collect::<Vec<_>>().join(" ") == name;
            if inside {
                found.get_or_insert_with(Vec::new);
            }
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                found.get_or_insert_with(Vec::new).push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    found
}

/// Refuses a dump directory that git would pick up: production data must never be committed.
pub fn check_ignored(root: &Path, dump_dir: &Path) -> Result<()> {
    use crate::error::fail;
    let probe = dump_dir.join("prod-00000000000000.dump");
    let rel = probe.strip_prefix(root).unwrap_or(&probe);
    let shown = dump_dir.strip_prefix(root).unwrap_or(dump_dir).display();
    match crate::git::is_ignored(root, rel) {
        Err(e) => Err(fail(format!("running `git check-ignore`: {e:#}"), "install git")),
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(fail(
            format!("{shown} is not git-ignored: refusing to write production data where it could be committed"),
            format!("add `/{shown}/` to .gitignore"),
        )),
        Ok(Err(why)) => Err(fail(
            format!("cannot tell whether {} is git-ignored: {why}", dump_dir.display()),
            "run from inside the repository's git checkout",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> CloneProd {
        let argv = ["cargo xtask", "db", "clone-prod"].into_iter().chain(args.iter().copied());
        match crate::flags::Xtask::parse_from(argv).command {
            crate::flags::Command::Db(db) => match db.verb {
                crate::flags::DbVerb::CloneProd(c) => c,
                _ => unreachable!(),
            },
            _ => unreachable!(),
        }
    }

    /// The configuration with `set` applied to its defaults.
    fn conf(set: impl FnOnce(&mut AwsConfig)) -> AwsConfig {
        let mut c = AwsConfig::default();
        set(&mut c);
        c
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    fn settings(f: &[&str], c: &AwsConfig) -> Settings {
        let mut p = Problems::new("t");
        let s = resolve(&flags(f), c, &mut p);
        assert!(p.list.is_empty(), "{:?}", p.list);
        s.unwrap()
    }

    fn problems(f: &[&str], c: AwsConfig) -> String {
        let mut p = Problems::new("t");
        assert!(resolve(&flags(f), &c, &mut p).is_none());
        p.list.iter().map(|f| format!("{} — {}\n", f.message, f.fix)).collect()
    }

    #[test]
    fn a_flag_wins_over_the_configuration() {
        let c = conf(|c| {
            c.credentials_secret = some("conf-secret");
            c.bastion = some("conf-bastion");
            c.instance_class = "db.m5.large".into();
            c.freshness_hours = 12;
            c.dbname = some("confdb");
        });
        let s = settings(
            &["--credentials-parameter", "/flag/param", "--bastion", "flag-bastion", "--dbname", "flagdb"],
            &c,
        );
        assert_eq!(s.access, Access::Stored(Stored::Parameter("/flag/param".into())));
        assert_eq!(s.tunnel, Route::Ssm { bastion: "flag-bastion".into() });
        assert_eq!(s.dbname.as_deref(), Some("flagdb"));
        assert_eq!(s.instance_class, "db.m5.large", "from the configuration: no flag given");
        assert_eq!(s.freshness, Duration::from_secs(12 * 3600));
        let s = settings(&["--instance-class", "db.t4g.micro", "--freshness-hours", "1", "--tunnel", "direct"], &c);
        assert_eq!(
            (s.instance_class.as_str(), s.freshness, s.tunnel),
            ("db.t4g.micro", Duration::from_secs(3600), Route::Direct)
        );
        assert_eq!(s.access, Access::Stored(Stored::Secret("conf-secret".into())));
        // --iam-auth overrides stored credentials in the configuration.
        let s = settings(&["--tunnel", "direct", "--iam-auth", "--db-user", "reader"], &c);
        assert_eq!(s.access, Access::Iam { user: some("reader") });
    }

    #[test]
    fn without_credentials_a_one_time_password() {
        assert_eq!(settings(&["--tunnel", "direct"], &conf(|_| {})).access, Access::OneTime);
        let iam = conf(|c| c.iam_auth = true);
        assert_eq!(settings(&["--tunnel", "direct"], &iam).access, Access::Iam { user: None });
    }

    #[test]
    fn what_is_missing_or_doubled_is_named_all_at_once() {
        let both = || {
            conf(|c| {
                c.credentials_parameter = some("p");
                c.credentials_secret = some("s");
            })
        };
        assert!(
            problems(&["--tunnel", "direct"], both()).contains("both a credentials parameter and a credentials secret")
        );
        assert!(problems(&["--tunnel", "command"], conf(|_| {})).contains("--tunnel command needs --tunnel-command"));
        assert!(problems(&["--tunnel", "ssm"], conf(|_| {})).contains("the ssm tunnel needs a bastion"));
        let p = problems(&["--tunnel", "command", "--tunnel-command", "ssh -N bastion"], conf(|_| {}));
        assert!(p.contains("has no {local_port} and no {host}"), "{p}");
        let iam_and_secret = conf(|c| {
            c.iam_auth = true;
            c.credentials_secret = some("s");
        });
        let p = problems(&["--tunnel", "ssm", "--instance-class", "m5.large"], iam_and_secret);
        assert_eq!(p.lines().count(), 3, "every problem, not the first:\n{p}");
        assert!(
            p.contains("IAM authentication and stored credentials")
                && p.contains("bastion")
                && p.contains("`m5.large`"),
            "{p}"
        );
        // A flag settles a doubled configuration.
        assert_eq!(
            settings(&["--tunnel", "direct", "--credentials-secret", "x"], &both()).access,
            Access::Stored(Stored::Secret("x".into()))
        );
    }

    #[test]
    fn exactly_one_source_an_instance_or_a_cluster() {
        let args = |i: Option<&str>, c: Option<&str>| AwsArgs {
            region: None,
            profile: None,
            source_instance: i.map(str::to_string),
            source_cluster: c.map(str::to_string),
        };
        let found = |a: &AwsArgs, c: &AwsConfig| {
            let mut p = Problems::new("t");
            let s = source(a, c, &mut p);
            (s, p.list.iter().map(|f| format!("{} — {}", f.message, f.fix)).collect::<Vec<_>>())
        };
        let both = conf(|c| {
            c.source_instance = some("prod-db");
            c.source_cluster = some("prod-aurora");
        });
        let (s, p) = found(&args(None, None), &both);
        assert_eq!(s, None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("both a source instance (`prod-db`) and a source cluster (`prod-aurora`)")
                && p[0].contains("[workspace.metadata.db.aws]")
                && p[0].contains("keep one"),
            "{p:?}"
        );
        let (s, p) = found(&args(Some("a"), Some("b")), &conf(|_| {}));
        assert!(s.is_none() && p[0].contains("--source-instance and --source-cluster"), "{p:?}");
        // A flag settles a doubled configuration; either alone is taken.
        assert_eq!(found(&args(None, Some("c")), &both).0, Some(Source::Cluster("c".into())));
        assert_eq!(found(&args(Some("i"), None), &both).0, Some(Source::Instance("i".into())));
        let cluster = conf(|c| c.source_cluster = some("prod-aurora"));
        assert_eq!(found(&args(None, None), &cluster).0, Some(Source::Cluster("prod-aurora".into())));
        let (s, p) = found(&args(None, None), &conf(|_| {}));
        assert!(s.is_none() && p[0].contains("--source-cluster"), "{p:?}");
    }

    #[test]
    fn aws_ini_sections() {
        let dir = std::env::temp_dir().join(format!("xtask-ini-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config");
        std::fs::write(
            &f,
            "[default]\nregion = eu-west-1\n\n[profile  prod ]\nsso_session = x\nregion=us-east-2\n[sso-session x]\n",
        )
        .unwrap();
        assert_eq!(section(Some(&f), "default").unwrap(), vec![("region".to_string(), "eu-west-1".to_string())]);
        assert_eq!(section(Some(&f), "profile prod").unwrap()[1], ("region".to_string(), "us-east-2".to_string()));
        assert!(section(Some(&f), "profile other").is_none());
        assert!(section(Some(&dir.join("absent")), "default").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
