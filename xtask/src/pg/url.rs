//! `postgres://` URLs as libpq reads them, reduced to what this tool needs: pick a database on
//! the same server, hand tools a URL *without* its secrets (the password goes through
//! `PGPASSWORD`, the other secret parameters through a service file: see `pg::service`), and
//! print a redacted form.
//!
//! Hand-written rather than the `url` crate: libpq URLs allow host lists (`h1:5432,h2:5433`),
//! empty hosts (Unix sockets) and `?host=/socket/dir`, which a WHATWG URL parser rejects or
//! rewrites — and the xtask is compiled by every new worktree, so each dependency costs.

use std::fmt;

use anyhow::{bail, Context, Result};

/// A parsed `postgres://user:password@host:port/dbname?param=value` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    /// The raw host list as written (`host:port[,host:port]`), possibly empty.
    hosts: String,
    dbname: Option<String>,
    /// Decoded query parameters, in order, without `password` (`sslpassword` included: see
    /// [`SECRET_PARAMS`]).
    params: Vec<(String, String)>,
}

/// Query parameters that hold secrets: never in argv or output. (`password` is parsed into a
/// field of its own, as it may also be in the user info.)
pub const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// How [`PgUrl::render`] writes the secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Omit,
    Mask,
    Expose,
}

// Never derive Debug: it would print the password.
impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.redacted())
    }
}

impl PgUrl {
    /// Parses a libpq connection URI. The error names what is wrong but never echoes the input
    /// (it may hold a password).
    pub fn parse(input: &str) -> Result<PgUrl> {
        let input = input.trim();
        let (scheme, rest) = input
            .split_once("://")
            .filter(|(s, _)| *s == "postgres" || *s == "postgresql")
            .context("not a postgres:// or postgresql:// URL")?;
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (before_query, None),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (mut user, mut password) = (None, None);
        if let Some(userinfo) = userinfo {
            let (u, p) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !u.is_empty() {
                user = Some(decode(u).context("the user name is not valid percent-encoding")?);
            }
            if let Some(p) = p {
                password = Some(decode(p).context("the password is not valid percent-encoding")?);
            }
        }
        if hosts.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
            bail!("the host part is malformed");
        }
        for hp in hosts.split(',').filter(|hp| !hp.is_empty()) {
            // `[::1]:5432`, `host:5432`, `host`
            let port = if let Some(rest) = hp.strip_prefix('[') {
                let (_, after) = rest.split_once(']').context("an IPv6 host lacks its `]`")?;
                after.strip_prefix(':')
            } else {
                hp.rsplit_once(':').map(|(_, p)| p)
            };
            if let Some(port) = port {
                if port.parse::<u16>().map_or(true, |p| p == 0) {
                    bail!("the port is not a number from 1 to 65535");
                }
            }
        }
        let dbname = match path {
            Some(p) if !p.is_empty() => Some(decode(p).context("the database name is not valid percent-encoding")?),
            _ => None,
        };
        let mut params = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k).context("a query parameter is not valid percent-encoding")?;
            let v = decode(v).context("a query parameter is not valid percent-encoding")?;
            match k.as_str() {
                "password" => password = Some(v),
                "user" => user = Some(v),
                "dbname" => bail!("`dbname` as a query parameter is not supported; put the database name in the path"),
                _ => params.push((k, v)),
            }
        }
        Ok(PgUrl { scheme: scheme.to_string(), user, password, hosts: hosts.to_string(), dbname, params })
    }

    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    /// The client key's passphrase; libpq has no environment variable for it.
    pub fn sslpassword(&self) -> Option<&str> {
        self.param("sslpassword")
    }

    /// The secrets this URL holds, by name (`password`, `sslpassword`), sorted.
    fn secrets(&self) -> Vec<(&str, &str)> {
        let params = self.params.iter().filter(|(k, _)| SECRET_PARAMS.contains(&k.as_str()));
        let mut all: Vec<(&str, &str)> = self.password.as_deref().map(|p| ("password", p)).into_iter().collect();
        all.extend(params.map(|(k, v)| (k.as_str(), v.as_str())));
        all.sort();
        all
    }

    /// The names of the secrets this URL holds, for messages.
    pub fn secret_names(&self) -> Vec<&str> {
        self.secrets().into_iter().map(|(k, _)| k).collect()
    }

    /// Whether `other` holds exactly the same secrets (wherever it points).
    pub fn same_secrets(&self, other: &PgUrl) -> bool {
        self.secrets() == other.secrets()
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgUrl {
        PgUrl { dbname: Some(dbname.to_string()), ..self.clone() }
    }

    /// `host:port` for messages: the first host (or the `host` parameter, or "local socket")
    /// and the port (default 5432).
    pub fn server_label(&self) -> String {
        let first = self.hosts.split(',').next().unwrap_or("");
        let (host, port) = split_host_port(first);
        let host = match host {
            "" => self.param("host").map(str::to_string).unwrap_or_else(|| "local socket".into()),
            h => h.to_string(),
        };
        let port = port.or(self.param("port")).unwrap_or("5432");
        format!("{host}:{port}")
    }

    /// The first host and port, as written (`None` host for a socket).
    pub fn host_port(&self) -> (Option<String>, u16) {
        let first = self.hosts.split(',').next().unwrap_or("");
        let (host, port) = split_host_port(first);
        let host = (!host.is_empty()).then(|| host.trim_matches(['[', ']']).to_string());
        let port = port.or(self.param("port")).and_then(|p| p.parse().ok()).unwrap_or(5432);
        (host, port)
    }

    /// The URL without the password and the other secret parameters: safe for argv, logs and
    /// error messages (programs get the secrets from [`crate::pg::libpq_env`]).
    pub fn without_secrets(&self) -> String {
        self.render(Secrets::Omit)
    }

    /// The URL with every secret replaced by `***`, for showing a user what is configured.
    pub fn redacted(&self) -> String {
        self.render(Secrets::Mask)
    }

    /// The full URL, secrets included: only for writing `.env` and the environment of
    /// child processes, never for argv or output.
    pub fn expose_secret(&self) -> String {
        self.render(Secrets::Expose)
    }

    fn render(&self, secrets: Secrets) -> String {
        let encoded = self.password.as_deref().map(encode);
        let password = match secrets {
            Secrets::Omit => None,
            Secrets::Mask => self.password.as_ref().map(|_| "***"),
            Secrets::Expose => encoded.as_deref(),
        };
        let mut s = format!("{}://", self.scheme);
        if self.user.is_some() || password.is_some() {
            s.push_str(&encode(self.user.as_deref().unwrap_or("")));
            if let Some(pw) = password {
                s.push(':');
                s.push_str(pw);
            }
            s.push('@');
        }
        s.push_str(&self.hosts);
        if let Some(db) = &self.dbname {
            s.push('/');
            s.push_str(&encode(db));
        }
        let mut first = true;
        for (k, v) in &self.params {
            let secret = SECRET_PARAMS.contains(&k.as_str());
            if secret && secrets == Secrets::Omit {
                continue;
            }
            s.push(if first { '?' } else { '&' });
            first = false;
            s.push_str(&encode(k));
            s.push('=');
            s.push_str(&if secret && secrets == Secrets::Mask { "***".to_string() } else { encode(v) });
        }
        s
    }
}

fn split_host_port(hp: &str) -> (&str, Option<&str>) {
    if hp.starts_with('[') {
        match hp.split_once("]:") {
            Some((h, p)) => (&hp[..h.len() + 1], Some(p)),
            None => (hp, None),
        }
    } else {
        match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    }
}

fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).context("truncated %-escape")?;
            let hex = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.context("invalid %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("not UTF-8 after decoding")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, redacted: &str, db: Option<&str>, password: Option<&str>) {
        let url = PgUrl::parse(input).unwrap();
        assert_eq!(url.redacted(), redacted);
        assert_eq!(url.dbname(), db);
        assert_eq!(url.password(), password);
        assert!(!url.without_secrets().contains(password.unwrap_or("\0")));
        assert_eq!(PgUrl::parse(&url.expose_secret()).unwrap(), url, "round trip");
    }

    #[test]
    fn parses_common_forms() {
        check("postgres://u:pw@127.0.0.1:5433/app", "postgres://u:***@127.0.0.1:5433/app", Some("app"), Some("pw"));
        check("postgresql://localhost/app", "postgresql://localhost/app", Some("app"), None);
        check(
            "postgres://u@h1:5432,h2:5433/db?sslmode=require",
            "postgres://u@h1:5432,h2:5433/db?sslmode=require",
            Some("db"),
            None,
        );
        check(
            "postgres:///db?host=%2Fvar%2Frun%2Fpostgresql",
            "postgres:///db?host=%2Fvar%2Frun%2Fpostgresql",
            Some("db"),
            None,
        );
        check("postgres://[::1]:5432/db", "postgres://[::1]:5432/db", Some("db"), None);
    }

    #[test]
    fn password_with_reserved_characters_survives() {
        let url = PgUrl::parse("postgres://me:p%40ss%2Fw%3Ard@h/d%20b").unwrap();
        assert_eq!(url.password(), Some("p@ss/w:rd"));
        assert_eq!(url.dbname(), Some("d b"));
        assert_eq!(url.expose_secret(), "postgres://me:p%40ss%2Fw%3Ard@h/d%20b");
        assert_eq!(url.without_secrets(), "postgres://me@h/d%20b");
    }

    #[test]
    fn password_in_query_is_moved_out() {
        let url = PgUrl::parse("postgres://h/db?password=sekret&sslmode=disable").unwrap();
        assert_eq!(url.password(), Some("sekret"));
        assert_eq!(url.without_secrets(), "postgres://h/db?sslmode=disable");
    }

    #[test]
    fn secret_parameters_are_masked_for_people_and_left_out_of_argv() {
        let url =
            PgUrl::parse("postgres://u:pw@h/db?sslmode=verify-full&sslpassword=key%20pw&application_name=x").unwrap();
        assert_eq!(url.sslpassword(), Some("key pw"));
        assert_eq!(url.redacted(), "postgres://u:***@h/db?sslmode=verify-full&sslpassword=***&application_name=x");
        assert_eq!(url.without_secrets(), "postgres://u@h/db?sslmode=verify-full&application_name=x");
        assert_eq!(format!("{url:?}"), format!("PgUrl({})", url.redacted()));
        assert_eq!(
            url.expose_secret(),
            "postgres://u:pw@h/db?sslmode=verify-full&sslpassword=key%20pw&application_name=x"
        );
        assert_eq!(url.secret_names(), ["password", "sslpassword"]);
        assert_eq!(PgUrl::parse("postgres://h/db").unwrap().secret_names(), Vec::<&str>::new());
        // Where the secrets were written does not matter, only which they are.
        let same = PgUrl::parse("postgres://u@h2/other?password=pw&sslpassword=key%20pw").unwrap();
        assert!(url.same_secrets(&same));
        assert!(!url.same_secrets(&PgUrl::parse("postgres://u:pw@h/db").unwrap()));
        assert!(!url.same_secrets(&PgUrl::parse("postgres://u:pw@h/db?sslpassword=other").unwrap()));
    }

    #[test]
    fn with_dbname_keeps_everything_else() {
        let url = PgUrl::parse("postgres://u:pw@h:1/a?application_name=x").unwrap();
        let b = url.with_dbname("feature/ä \"x\"");
        assert_eq!(b.redacted(), "postgres://u:***@h:1/feature%2F%C3%A4%20%22x%22?application_name=x");
        assert_eq!(b.dbname(), Some("feature/ä \"x\""));
    }

    #[test]
    fn missing_database_name() {
        assert_eq!(PgUrl::parse("postgres://u@h:5432/").unwrap().dbname(), None);
        assert_eq!(PgUrl::parse("postgres://u@h:5432").unwrap().dbname(), None);
    }

    #[test]
    fn garbage_is_rejected_without_echoing_it() {
        for bad in [
            "",
            "hello",
            "mysql://u:secretpw@h/db",
            "postgres://u:secretpw@h:99999/db",
            "postgres://u:secretpw@h:x/db",
            "postgres://u:%zz@h/db",
            "postgres://a b/db",
        ] {
            let err = format!("{:#}", PgUrl::parse(bad).unwrap_err());
            assert!(!err.contains("secretpw"), "{err}");
        }
    }

    #[test]
    fn server_label() {
        assert_eq!(PgUrl::parse("postgres://u@h:6000/db").unwrap().server_label(), "h:6000");
        assert_eq!(PgUrl::parse("postgres://u@h/db").unwrap().server_label(), "h:5432");
        assert_eq!(PgUrl::parse("postgres:///db?host=/tmp&port=7").unwrap().server_label(), "/tmp:7");
        assert_eq!(PgUrl::parse("postgres://[::1]:7/db").unwrap().host_port(), (Some("::1".into()), 7));
    }
}
