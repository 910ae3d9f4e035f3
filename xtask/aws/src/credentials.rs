//! How `psql` and `pg_dump` log in to the throwaway: a one-time master password generated here
//! and set on it after its restore (the default), an IAM token, or production's credentials read
//! from an SSM parameter or a Secrets Manager secret. Kept in memory, handed to the clients
//! through their environment only. Never printed: the password's `Debug` is redacted and no
//! message includes it.

use std::fmt;
use std::io::Read;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::Deserialize;
use xtask::error::fail;

use crate::kit::aws_error;

/// Where stored credentials are read from.
pub use xtask::db::clone_prod::Stored as Source;

/// The password the next connection uses: fixed, or an IAM token a background task renews.
#[derive(Clone, Default)]
pub struct Password(Arc<Mutex<String>>);

impl Password {
    pub fn new(s: String) -> Password {
        Password(Arc::new(Mutex::new(s)))
    }
    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, s: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
    pub dbname: String,
}

/// A master password for one run: 40 letters and digits from the kernel's random source
/// (RDS accepts 8-128 printable characters but `/`, `"`, `@` and space).
pub fn one_time_password() -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut out = String::with_capacity(40);
    let mut byte = [0u8; 1];
    while out.len() < 40 {
        random.read_exact(&mut byte).context("reading /dev/urandom")?;
        // 248 = 4 × 62: no bias.
        if byte[0] < 248 {
            out.push(ALPHABET[(byte[0] % 62) as usize] as char);
        }
    }
    Ok(out)
}

/// An IAM authentication token for `user` at the instance's own endpoint (the token names the
/// host it is for, not the tunnel's end); valid for 15 minutes for new connections.
pub async fn iam_token(sdk: &aws_config::SdkConfig, host: &str, port: u16, user: &str) -> Result<String> {
    use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
    let config = Config::builder()
        .hostname(host)
        .port(u64::from(port))
        .username(user)
        .build()
        .map_err(|e| anyhow::anyhow!("configuring the IAM token: {e}"))?;
    let token = AuthTokenGenerator::new(config).auth_token(sdk).await.map_err(|e| {
        fail(
            format!("making an IAM authentication token: {e}"),
            "log in to AWS (`aws sso login --profile …`), or set AWS_PROFILE / credentials in the environment",
        )
    })?;
    Ok(token.to_string())
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
    Ok(Credentials { username, password: Password::new(password), dbname })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_iam_token_is_for_the_instance_s_own_endpoint_and_user_for_15_minutes() {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_rds::config::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
            .load()
            .await;
        let t = iam_token(&sdk, "prod-clone-1.abc.eu-west-1.rds.amazonaws.com", 5432, "app_user").await.unwrap();
        assert!(
            t.starts_with("prod-clone-1.abc.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app_user&"),
            "{t}"
        );
        assert!(t.contains("X-Amz-Expires=900") && t.contains("X-Amz-Signature="), "{t}");
        assert!(t.contains("%2Feu-west-1%2Frds-db%2Faws4_request"), "{t}");
    }

    #[test]
    fn one_time_passwords_are_long_plain_and_different() {
        let (a, b) = (one_time_password().unwrap(), one_time_password().unwrap());
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn parses_and_never_shows_the_password() {
        let src = Source::Parameter("/prod/db".into());
        let c = parse(r#"{"username":"app","password":"s3cr3t-pw","dbname":"crm"}"#, &src, None).unwrap();
        assert_eq!((c.username.as_str(), c.dbname.as_str()), ("app", "crm"));
        assert!(!format!("{c:?}").contains("s3cr3t-pw") && c.password.get() == "s3cr3t-pw");
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
