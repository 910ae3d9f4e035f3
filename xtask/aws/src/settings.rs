//! What a `clone-prod` run uses, each setting from its flag or else from
//! `[workspace.metadata.db.aws]`: one pure function, decided before anything is asked of AWS.

use std::time::Duration;

use anyhow::Result;
use xtask::config::{AwsConfig, TunnelKind};
use xtask::error::fail;
use xtask::flags::CloneProd;

use crate::credentials;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub tunnel: Route,
    pub tunnel_timeout: Duration,
    pub credentials: credentials::Source,
    /// The database to dump when the credentials carry no `dbname`.
    pub dbname: Option<String>,
    pub instance_class: String,
    /// Reuse the newest snapshot when younger than this.
    pub freshness: Duration,
    /// The throwaway instance's `ExpiresAt`, from its creation.
    pub ttl: Duration,
}

/// A flag wins over the configuration; what is missing, or configured twice over, is an error
/// naming the flag and the configuration key.
pub fn resolve(flags: &CloneProd, conf: &AwsConfig) -> Result<Settings> {
    let credentials = match (&flags.credentials_parameter, &flags.credentials_secret) {
        (Some(p), _) => credentials::Source::Parameter(p.clone()),
        (None, Some(s)) => credentials::Source::Secret(s.clone()),
        (None, None) => match (&conf.credentials_parameter, &conf.credentials_secret) {
            (Some(p), None) => credentials::Source::Parameter(p.clone()),
            (None, Some(s)) => credentials::Source::Secret(s.clone()),
            (Some(_), Some(_)) => {
                return Err(fail(
                    "both `credentials_parameter` and `credentials_secret` are configured",
                    "keep one of them in [workspace.metadata.db.aws], or pass the one to use as a flag",
                ))
            }
            (None, None) => {
                return Err(fail(
                    "no database credentials are configured",
                    "pass --credentials-parameter NAME (SSM) or --credentials-secret ID (Secrets Manager), or set one in [workspace.metadata.db.aws]",
                ))
            }
        },
    };
    let tunnel = match flags.tunnel.unwrap_or(conf.tunnel) {
        TunnelKind::Direct => Route::Direct,
        TunnelKind::Command => Route::Command(flags.tunnel_command.clone().or_else(|| conf.tunnel_command.clone()).ok_or_else(|| {
            fail(
                "--tunnel command needs --tunnel-command",
                "e.g. --tunnel-command 'ssh -N -L {local_port}:{host}:{port} bastion' (or `tunnel_command` in [workspace.metadata.db.aws])",
            )
        })?),
        TunnelKind::Ssm => Route::Ssm {
            bastion: flags.bastion.clone().or_else(|| conf.bastion.clone()).ok_or_else(|| {
                fail(
                    "the ssm tunnel needs a bastion",
                    "pass --bastion NAME (the EC2 instance's Name tag), or set `bastion` in [workspace.metadata.db.aws]",
                )
            })?,
        },
    };
    Ok(Settings {
        tunnel,
        tunnel_timeout: Duration::from_secs(flags.tunnel_timeout.max(1)),
        credentials,
        dbname: flags.dbname.clone().or_else(|| conf.dbname.clone()),
        instance_class: flags.instance_class.clone().unwrap_or_else(|| conf.instance_class.clone()),
        freshness: Duration::from_secs(flags.freshness_hours.unwrap_or(conf.freshness_hours) * 3600),
        ttl: Duration::from_secs(conf.clone_ttl_hours.max(1) * 3600),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> CloneProd {
        let argv = ["cargo xtask", "db", "clone-prod"].into_iter().chain(args.iter().copied());
        match xtask::flags::Xtask::parse_from(argv).command {
            xtask::flags::Command::Db(db) => match db.verb {
                xtask::flags::DbVerb::CloneProd(c) => c,
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

    #[test]
    fn a_flag_wins_over_the_configuration() {
        let c = conf(|c| {
            c.credentials_secret = some("conf-secret");
            c.bastion = some("conf-bastion");
            c.instance_class = "db.m5.large".into();
            c.freshness_hours = 12;
            c.dbname = some("confdb");
        });
        let s = resolve(
            &flags(&["--credentials-parameter", "/flag/param", "--bastion", "flag-bastion", "--dbname", "flagdb"]),
            &c,
        )
        .unwrap();
        assert_eq!(s.credentials, credentials::Source::Parameter("/flag/param".into()));
        assert_eq!(s.tunnel, Route::Ssm { bastion: "flag-bastion".into() });
        assert_eq!(s.dbname.as_deref(), Some("flagdb"));
        assert_eq!(s.instance_class, "db.m5.large", "from the configuration: no flag given");
        assert_eq!(s.freshness, Duration::from_secs(12 * 3600));
        let s =
            resolve(&flags(&["--instance-class", "db.t4g.micro", "--freshness-hours", "1", "--tunnel", "direct"]), &c)
                .unwrap();
        assert_eq!(
            (s.instance_class.as_str(), s.freshness, s.tunnel),
            ("db.t4g.micro", Duration::from_secs(3600), Route::Direct)
        );
        assert_eq!(s.credentials, credentials::Source::Secret("conf-secret".into()));
    }

    #[test]
    fn what_is_missing_or_doubled_is_named() {
        let err = |f: &[&str], c: AwsConfig| format!("{:#}", resolve(&flags(f), &c).unwrap_err());
        let secret = || conf(|c| c.credentials_secret = some("s"));
        let both = || {
            conf(|c| {
                c.credentials_parameter = some("p");
                c.credentials_secret = some("s");
            })
        };
        assert!(err(&["--tunnel", "direct"], conf(|_| {})).contains("no database credentials are configured"));
        assert!(err(&["--tunnel", "direct"], both()).contains("both `credentials_parameter` and `credentials_secret`"));
        assert!(err(&["--tunnel", "command"], secret()).contains("--tunnel command needs --tunnel-command"));
        assert!(err(&["--tunnel", "ssm"], secret()).contains("the ssm tunnel needs a bastion"));
        // A flag settles a doubled configuration.
        assert!(resolve(&flags(&["--tunnel", "direct", "--credentials-secret", "x"]), &both()).is_ok());
    }
}
