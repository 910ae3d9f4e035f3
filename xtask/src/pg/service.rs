//! Secret URL parameters that libpq has no environment variable for (`sslpassword`), passed to
//! programs in a connection service file: argv is readable by every user of the machine (`ps`,
//! `/proc/<pid>/cmdline`); the environment and a 0600 file in a 0700 directory are not.
//!
//! A child gets `PGSERVICEFILE=<file>` and `PGSERVICE=xtask`; the file holds `[xtask]` and
//! `sslpassword=…`. libpq takes a service's values only for what the connection string leaves
//! unset, so it composes with the URL in argv — which is why a URL that names a `service` of its
//! own, or a `PGSERVICE` in the environment, is refused rather than silently replaced.
//!
//! The files live in one private directory per process, `xtask-pgservice-<pid>` in the temp
//! directory, created on first need and removed when the process exits (`atexit`: `main`
//! returns on success, error, interruption and panic alike, and `process::exit` runs it too).
//! Only SIGKILL leaves one behind; the next run that needs a service file removes it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock};

use anyhow::{Context, Result};

use super::PgUrl;
use crate::error::fail;

/// The service name children are given.
pub const SERVICE: &str = "xtask";

const DIR_PREFIX: &str = "xtask-pgservice-";

/// The service file that carries `url`'s secret parameters, if it has any.
pub fn for_url(url: &PgUrl) -> Result<Option<PathBuf>> {
    let Some(secret) = url.sslpassword() else { return Ok(None) };
    check(url, secret, std::env::var_os("PGSERVICE").is_some())?;
    static FILES: Mutex<Option<Files>> = Mutex::new(None);
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    if files.is_none() {
        let tmp = std::env::temp_dir();
        sweep(&tmp);
        let made = Files::create(tmp.join(format!("{DIR_PREFIX}{}", std::process::id())))?;
        remove_at_exit(&made.dir);
        *files = Some(made);
    }
    files.as_mut().expect("just made").file_for(secret).map(Some)
}

/// Refuses what a service file cannot carry faithfully.
fn check(url: &PgUrl, secret: &str, pgservice_set: bool) -> Result<()> {
    let service_fix =
        "put sslpassword into that service's section of your service file instead, and leave it out of DATABASE_URL";
    if url.param("service").is_some() {
        return Err(fail(
            "DATABASE_URL has both `service` and `sslpassword`: this tool passes sslpassword to programs in a service file of its own, which would replace yours",
            service_fix,
        ));
    }
    if pgservice_set {
        return Err(fail(
            "PGSERVICE is set and DATABASE_URL has `sslpassword`: this tool passes sslpassword to programs in a service file of its own, which would replace yours",
            service_fix,
        ));
    }
    // libpq reads a service file line by line and trims trailing blanks.
    if secret.contains(char::is_control) || secret.ends_with(char::is_whitespace) {
        return Err(fail(
            "the sslpassword in DATABASE_URL contains a control character or ends with a blank: it cannot be passed on",
            "change the client key's passphrase",
        ));
    }
    Ok(())
}

/// One process's service files: a 0700 directory, a 0600 file for each distinct secret.
struct Files {
    dir: PathBuf,
    written: Vec<(String, PathBuf)>,
}

impl Files {
    fn create(dir: PathBuf) -> Result<Files> {
        use std::os::unix::fs::DirBuilderExt;
        // Ours by name (our pid), so stale: a killed process's that had the same pid.
        let _ = std::fs::remove_dir_all(&dir);
        // Fails if someone created it since: never write secrets into a directory not made here.
        std::fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Files { dir, written: Vec::new() })
    }

    fn file_for(&mut self, secret: &str) -> Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some((_, path)) = self.written.iter().find(|(s, _)| s == secret) {
            return Ok(path.clone());
        }
        let path = self.dir.join(format!("service-{}.conf", self.written.len()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut f, format!("[{SERVICE}]\nsslpassword={secret}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        self.written.push((secret.to_string(), path.clone()));
        Ok(path)
    }
}

/// Removes `dir` when the process exits.
fn remove_at_exit(dir: &Path) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static REGISTER: Once = Once::new();
    let _ = DIR.set(dir.to_path_buf());
    extern "C" fn remove() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    // SAFETY: `remove` only reads a static that is set before, and never unwinds.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove);
    });
}

/// Removes the service directories of our own processes that are gone (killed outright).
fn sweep(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)).and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        // SAFETY: signal 0 only checks whether the process exists.
        let gone =
            unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if ours && gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn one_private_file_per_secret() {
        let dir = std::env::temp_dir().join(format!("xtask-service-test-{}", std::process::id()));
        let mut files = Files::create(dir.clone()).unwrap();
        let a = files.file_for("key pw").unwrap();
        assert_eq!(files.file_for("key pw").unwrap(), a, "written once");
        let b = files.file_for("other").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "[xtask]\nsslpassword=key pw\n");
        assert_eq!((mode(&dir), mode(&a), mode(&b)), (0o700, 0o600, 0o600));
        // A leftover of the same name is replaced, not written into.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Files::create(dir.clone()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert!(!a.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_a_service_file_cannot_carry_is_refused() {
        let url = |s: &str| PgUrl::parse(s).unwrap();
        let plain = url("postgres://h/db?sslpassword=sekrit");
        assert!(check(&plain, "sekrit", false).is_ok());
        for (u, secret, pgservice, why) in [
            ("postgres://h/db?service=mine&sslpassword=sekrit", "sekrit", false, "both `service` and `sslpassword`"),
            ("postgres://h/db?sslpassword=sekrit", "sekrit", true, "PGSERVICE is set"),
            ("postgres://h/db?sslpassword=a%0Ahost%3Devil", "a\nhost=evil", false, "control character"),
            ("postgres://h/db?sslpassword=a%20", "a ", false, "ends with a blank"),
        ] {
            let err = crate::error::report(&check(&url(u), secret, pgservice).unwrap_err()).line;
            assert!(err.contains(why), "{err}");
            assert!(!err.contains("sekrit") && !err.contains("evil"), "{err}");
        }
    }

    #[test]
    fn no_secret_no_file() {
        assert_eq!(for_url(&PgUrl::parse("postgres://u:pw@h/db").unwrap()).unwrap(), None);
    }
}
