//! `app`: a small CRM service on PostgreSQL.
//!
//! ```text
//! app migrate   apply pending migrations to DATABASE_URL
//! app serve     serve HTTP (GET /health) on 127.0.0.1:PORT
//! ```
//!
//! See [`config`] for the environment variables it reads.

mod config;
mod db;
mod serve;

use std::process::ExitCode;

use config::Config;

const USAGE: &str = "\
app: a small CRM service on PostgreSQL

Usage: app <COMMAND>

Commands:
  migrate   Apply pending migrations (migrations/) to DATABASE_URL
  serve     Serve HTTP on 127.0.0.1:PORT (GET /health)
  help      Print this help

Environment (read from the process, then from .env in this directory or a parent):
  DATABASE_URL          PostgreSQL URL (required)
  APP_DB_NAME_OVERRIDE  If set and not blank, replaces the database name in DATABASE_URL
  PORT                  Port for `serve` (default 3000)
  APP_HOST              Public host name the service is reached at (logged by `serve`)
  APP_MIGRATIONS_DIR    `migrate` reads migrations from this directory instead of the built-in ones
";

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Migrate,
    Serve,
    Help,
}

/// Parses the arguments after the program name.
fn parse_args(args: &[String]) -> Result<Command, String> {
    match args {
        [] => Err("missing command".to_owned()),
        [flag, ..] if flag == "-h" || flag == "--help" || flag == "help" => Ok(Command::Help),
        [command] if command == "migrate" => Ok(Command::Migrate),
        [command] if command == "serve" => Ok(Command::Serve),
        [command, rest @ ..] if command == "migrate" || command == "serve" => {
            if rest.iter().any(|a| a == "-h" || a == "--help") {
                Ok(Command::Help)
            } else {
                Err(format!("unexpected argument {:?} after {command:?}", rest[0]))
            }
        }
        [command, ..] => Err(format!("unknown command {command:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(command) => command,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// Formats an error and its causes on one line, `outer: inner: ...`.
///
/// Causes whose text the line already contains are skipped: sqlx errors repeat
/// their source in their own message, and anyhow's `{:#}` would print it twice.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if line.contains(&message) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(message.trim());
    }
    line.replace('\n', " ")
}

/// Loads the configuration and runs `command` on a Tokio runtime.
fn run(command: Command) -> anyhow::Result<()> {
    // Before the runtime starts any thread: loading .env sets variables.
    let config = Config::load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match command {
            Command::Migrate => migrate(&config).await,
            Command::Serve => serve::run(&config).await,
            Command::Help => Ok(()),
        }
    })
}

/// `app migrate`.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let url = config.database_url()?;
    let mut conn = db::connect(&url).await?;
    eprintln!("migrating {}", config::redact_url(&url));
    let summary = db::migrate(&mut conn).await?;
    let version = summary.version.map_or_else(|| "none".to_owned(), |v| v.to_string());
    eprintln!("{} applied, database at version {version}", summary.applied.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn error_line_skips_repeated_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = anyhow::Error::new(sqlx::Error::Io(io)).context("cannot connect");
        assert_eq!(one_line(&err), "cannot connect: error communicating with database: refused");
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse_args(&args(&["migrate"])), Ok(Command::Migrate));
        assert_eq!(parse_args(&args(&["serve"])), Ok(Command::Serve));
        assert_eq!(parse_args(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse_args(&args(&["serve", "-h"])), Ok(Command::Help));
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["frobnicate"])).is_err());
        assert!(parse_args(&args(&["migrate", "extra"])).is_err());
    }
}
