//! The database credentials: read at run time from an SSM parameter or a Secrets Manager secret,
//! kept in memory, handed to `psql`/`pg_dump` through their environment only. Never printed: the
//! password's `Debug` is redacted and no message includes it.

use std::fmt;

use anyhow::Result;
use serde::Deserialize;
use xtask::error::fail;

use crate::kit::aws_error;

/// Where the credentials are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Parameter(String),
    Secret(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Parameter(n) => write!(f, "SSM parameter `{n}`"),
            Source::Secret(n) => write!(f, "Secrets Manager secret `{n}`"),
        }
    }
}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub dbname: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: ***, dbname: {:?} }}", self.username, self.dbname)
    }
}

#[derive(Deserialize)]
struct Json {
    username: Option<String>,
    password: Option<String>,
    #[serde(alias = "dbName", alias = "database")]
    dbname: Option<String>,
}

/// Reads and parses the credentials. `dbname` comes from the JSON, else `fallback_db`.
pub async fn fetch(sdk: &aws_config::SdkConfig, source: &Source, fallback_db: Option<&str>) -> Result<Credentials> {
    let text = read(sdk, source).await?;
    parse(&text, source, fallback_db)
}

/// The text of a parameter (decrypted) or a secret.
pub async fn read(sdk: &aws_config::SdkConfig, source: &Source) -> Result<String> {
    Ok(match source {
        Source::Parameter(name) => {
            let ssm = aws_sdk_ssm::Client::new(sdk);
            let out = ssm
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| aws_error(&format!("reading the {source}"), e))?;
            out.parameter().and_then(|p| p.value()).unwrap_or_default().to_string()
        }
        Source::Secret(id) => {
            let sm = aws_sdk_secretsmanager::Client::new(sdk);
            let out = sm
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| aws_error(&format!("reading the {source}"), e))?;
            out.secret_string().unwrap_or_default().to_string()
        }
    })
}

/// The JSON's fields; errors name the missing field, never the content.
pub fn parse(text: &str, source: &Source, fallback_db: Option<&str>) -> Result<Credentials> {
    let shape = "a JSON object {\"username\": …, \"password\": …, \"dbname\": …}";
    let json: Json = serde_json::from_str(text)
        .map_err(|_| fail(format!("the {source} is not valid JSON"), format!("store {shape} in it")))?;
    let field = |v: Option<String>, name: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| fail(format!("the {source} has no `{name}`"), format!("store {shape} in it")))
    };
    let username = field(json.username, "username")?;
    let password = field(json.password, "password")?;
    let dbname = match json.dbname.filter(|s| !s.is_empty()).or(fallback_db.map(str::to_string)) {
        Some(d) => d,
        None => {
            return Err(fail(
                format!("the {source} has no `dbname`, and none is configured"),
                "add \"dbname\" to it, or pass --dbname (`dbname` in [workspace.metadata.db.aws])",
            ))
        }
    };
    Ok(Credentials { username, password, dbname })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_never_shows_the_password() {
        let src = Source::Parameter("/prod/db".into());
        let c = parse(r#"{"username":"app","password":"s3cr3t-pw","dbname":"crm"}"#, &src, None).unwrap();
        assert_eq!((c.username.as_str(), c.dbname.as_str()), ("app", "crm"));
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        // RDS-managed secrets carry no dbname: the fallback.
        let c = parse(r#"{"username":"app","password":"s3cr3t-pw"}"#, &src, Some("crm")).unwrap();
        assert_eq!(c.dbname, "crm");
        for bad in [
            r#"{"username":"app"}"#,
            r#"{"password":"s3cr3t-pw","dbname":"x"}"#,
            "s3cr3t-pw",
            r#"{"username":"app","password":"s3cr3t-pw"}"#,
        ] {
            let e = xtask::error::report(&parse(bad, &src, None).unwrap_err()).line;
            assert!(!e.contains("s3cr3t-pw") && e.contains("/prod/db"), "{e}");
        }
    }
}
