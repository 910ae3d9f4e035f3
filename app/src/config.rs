//! Configuration: the process environment, falling back to a `.env` file.
//!
//! Variables are read from the process environment first; a `.env` file in the
//! current directory or one of its parents fills in whatever is missing
//! (`dotenvy::dotenv()` semantics: the process environment always wins).
//!
//! | variable               | meaning                                                        |
//! |------------------------|----------------------------------------------------------------|
//! | `DATABASE_URL`         | PostgreSQL connection URL (required by `migrate` and `serve`)  |
//! | `APP_DB_NAME_OVERRIDE` | if set and not blank, replaces only the database name in it    |
//! | `PORT`                 | TCP port `serve` listens on, on 127.0.0.1 (default 3000)       |
//! | `APP_HOST`             | public host name (or URL) the service is reached at, if any    |

use anyhow::{bail, Context};
use url::Url;

/// Port `serve` listens on when `PORT` is not set.
pub const DEFAULT_PORT: u16 = 3000;

/// The application's configuration, as read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL` as given (before the name override); `None` if unset or blank.
    database_url: Option<String>,
    /// `APP_DB_NAME_OVERRIDE`, if set and not blank.
    db_name_override: Option<String>,
    /// `PORT`, or [`DEFAULT_PORT`].
    pub port: u16,
    /// `APP_HOST`, if set and not blank.
    pub app_host: Option<String>,
}

impl Config {
    /// Loads `.env` (if there is one) into the environment without overriding
    /// variables already set, then reads the configuration from the environment.
    ///
    /// Must be called before any other thread is started (it may set
    /// environment variables).
    pub fn load() -> anyhow::Result<Self> {
        if let Err(err) = dotenvy::dotenv() {
            if !err.not_found() {
                return Err(err).context("reading .env");
            }
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from a variable lookup function (the process
    /// environment in production, a map in tests). Blank values count as unset.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let port = match get("PORT") {
            None => DEFAULT_PORT,
            Some(raw) => raw
                .trim()
                .parse::<u16>()
                .with_context(|| format!("PORT must be a TCP port number (0-65535), got {raw:?}"))?,
        };
        Ok(Self {
            database_url: get("DATABASE_URL"),
            db_name_override: get("APP_DB_NAME_OVERRIDE"),
            port,
            app_host: get("APP_HOST").map(|host| host.trim().to_owned()),
        })
    }

    /// The URL to connect to: `DATABASE_URL` with `APP_DB_NAME_OVERRIDE` applied.
    pub fn database_url(&self) -> anyhow::Result<String> {
        let Some(url) = self.database_url.as_deref() else {
            bail!("DATABASE_URL is not set (set it in the environment or in .env)");
        };
        effective_database_url(url, self.db_name_override.as_deref())
    }

    /// The public URL derived from `APP_HOST`, if set: used as is when it already
    /// has a scheme, otherwise prefixed with `http://`.
    pub fn public_url(&self) -> Option<String> {
        self.app_host.as_deref().map(
            |host| {
                if host.contains("://") {
                    host.to_owned()
                } else {
                    format!("http://{host}")
                }
            },
        )
    }
}

/// Returns `url` with its database name (the URL path) replaced by
/// `db_name_override`, when that is `Some` and not blank.
///
/// Everything else (scheme, user, percent-encoded password, host, port, query
/// string) is preserved byte for byte. When there is no override, `url` is
/// returned unchanged (after checking that it parses as a PostgreSQL URL). The
/// new name is percent-encoded as a single path segment.
pub fn effective_database_url(url: &str, db_name_override: Option<&str>) -> anyhow::Result<String> {
    // `url::ParseError` never echoes its input, so no password can leak here.
    let mut parsed = Url::parse(url).context("DATABASE_URL is not a valid URL")?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        bail!("DATABASE_URL must start with postgres:// or postgresql://, got scheme {:?}", parsed.scheme());
    }
    let Some(name) = db_name_override.filter(|name| !name.trim().is_empty()) else {
        return Ok(url.to_owned());
    };
    parsed
        .path_segments_mut()
        .map_err(|()| anyhow::anyhow!("DATABASE_URL has no host part, cannot set the database name"))?
        .clear()
        .push(name);
    Ok(parsed.into())
}

/// Query parameters that hold secrets, as libpq knows them.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// Returns `url` with its password and secret query parameters (if any) replaced
/// by `***`, for logging.
///
/// A string that does not parse as a URL is not echoed at all, since it might
/// contain a password in a form this function does not recognise.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Cannot fail: a URL with a password has a host.
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query_pairs().any(|(k, _)| SECRET_PARAMS.contains(&k.as_ref())) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if SECRET_PARAMS.contains(&k.as_ref()) { "***".into() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.into()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const BASE: &str = "postgres://app:secret@db.example.com:5433/app_main";

    #[test]
    fn override_unset_keeps_url() {
        assert_eq!(effective_database_url(BASE, None).unwrap(), BASE);
    }

    #[test]
    fn override_blank_keeps_url() {
        assert_eq!(effective_database_url(BASE, Some("")).unwrap(), BASE);
    }

    #[test]
    fn override_whitespace_only_keeps_url() {
        assert_eq!(effective_database_url(BASE, Some(" \t\n ")).unwrap(), BASE);
    }

    #[test]
    fn override_set_replaces_only_the_name() {
        assert_eq!(
            effective_database_url(BASE, Some("app_feature_x")).unwrap(),
            "postgres://app:secret@db.example.com:5433/app_feature_x"
        );
    }

    #[test]
    fn override_keeps_query_string() {
        let url = "postgresql://app:secret@db:5432/app_main?sslmode=require&application_name=x";
        assert_eq!(
            effective_database_url(url, Some("app_other")).unwrap(),
            "postgresql://app:secret@db:5432/app_other?sslmode=require&application_name=x"
        );
    }

    #[test]
    fn override_keeps_percent_encoded_password_byte_for_byte() {
        let url = "postgres://app:p%40ss%2Fword@127.0.0.1:5432/app_main";
        assert_eq!(
            effective_database_url(url, Some("app_wt")).unwrap(),
            "postgres://app:p%40ss%2Fword@127.0.0.1:5432/app_wt"
        );
        // And without an override the URL is untouched too.
        assert_eq!(effective_database_url(url, None).unwrap(), url);
    }

    #[test]
    fn override_is_percent_encoded() {
        assert_eq!(
            effective_database_url(BASE, Some("my db")).unwrap(),
            "postgres://app:secret@db.example.com:5433/my%20db"
        );
        // A slash or percent sign cannot escape the single path segment.
        assert_eq!(
            effective_database_url(BASE, Some("a/b%c")).unwrap(),
            "postgres://app:secret@db.example.com:5433/a%2Fb%25c"
        );
    }

    #[test]
    fn override_on_url_without_path() {
        assert_eq!(
            effective_database_url("postgres://app@localhost:5432", Some("app_wt")).unwrap(),
            "postgres://app@localhost:5432/app_wt"
        );
        assert_eq!(
            effective_database_url("postgres://app@localhost:5432?sslmode=disable", Some("x")).unwrap(),
            "postgres://app@localhost:5432/x?sslmode=disable"
        );
    }

    #[test]
    fn rejects_non_postgres_and_invalid_urls() {
        assert!(effective_database_url("mysql://u@h/db", None).is_err());
        let err = effective_database_url("not a url with p4ssw0rd", Some("x")).unwrap_err();
        assert!(!format!("{err:#}").contains("p4ssw0rd"));
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("postgres://app:p%40ss%2Fword@db:5432/app_main?sslmode=require"),
            "postgres://app:***@db:5432/app_main?sslmode=require"
        );
        assert_eq!(redact_url("postgres://app@db/app_main"), "postgres://app@db/app_main");
        assert_eq!(
            redact_url("postgres://app@db/app_main?sslpassword=k%20pw&sslmode=require&password=pw"),
            "postgres://app@db/app_main?sslpassword=***&sslmode=require&password=***"
        );
        assert_eq!(redact_url("::not a url:secret@"), "<unparseable URL>");
    }

    fn config_from(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn config_defaults_and_errors() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config.port, DEFAULT_PORT);
        assert_eq!(config.public_url(), None);
        let err = config.database_url().unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL is not set"), "{err}");

        let config = config_from(&[("DATABASE_URL", "  "), ("PORT", "")]).unwrap();
        assert!(config.database_url().is_err());
        assert_eq!(config.port, DEFAULT_PORT);

        assert!(config_from(&[("PORT", "http")]).is_err());
        assert!(config_from(&[("PORT", "70000")]).is_err());
    }

    #[test]
    fn config_applies_override_and_host() {
        let config = config_from(&[
            ("DATABASE_URL", BASE),
            ("APP_DB_NAME_OVERRIDE", "app_wt_1"),
            ("PORT", "4001"),
            ("APP_HOST", "wt-1.localhost"),
        ])
        .unwrap();
        assert_eq!(config.database_url().unwrap(), "postgres://app:secret@db.example.com:5433/app_wt_1");
        assert_eq!(config.port, 4001);
        assert_eq!(config.public_url().as_deref(), Some("http://wt-1.localhost"));

        let config = config_from(&[("APP_HOST", "https://crm.example.com")]).unwrap();
        assert_eq!(config.public_url().as_deref(), Some("https://crm.example.com"));
    }
}
