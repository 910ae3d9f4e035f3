//! A dump written whole or not at all, for `clone-prod` (xtask/aws) and `bench dump` alike:
//! `pg_dump` into a temporary name beside its destination — one custom-format file (`-Fc`,
//! `--jobs 1`), or a directory dumped several tables at a time (`-Fd -j N`, N+1 connections) —,
//! private (a 0600 file; a 0700 directory of 0600 files), renamed into place only when pg_dump
//! succeeded, and removed on an error, a signal or a drop. Progress on stderr every 10 s: the
//! bytes written so far (a directory's summed).
//!
//! The caller builds pg_dump's connection (through [`super::client`]: the secrets in its
//! environment, never in argv); [`Writing`] adds the format and the file, runs it through
//! [`crate::proc`] and is polled, so an async caller stays cancellable between polls.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::pg::human_size;
use crate::proc;
use crate::time::elapsed;

/// How pg_dump writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One custom-format file (`pg_dump -Fc`), over one connection.
    Custom,
    /// A directory (`pg_dump -Fd -j N`): `toc.dat` and a file per table, `jobs` tables at a
    /// time, each over a connection of its own (plus the leader's).
    Directory { jobs: u32 },
}

impl Format {
    /// `--jobs 1` (or 0) is the single custom-format file; more, a directory dumped that many
    /// tables at a time.
    pub fn with_jobs(jobs: u32) -> Format {
        if jobs <= 1 {
            Format::Custom
        } else {
            Format::Directory { jobs }
        }
    }

    fn args(self) -> Vec<String> {
        match self {
            Format::Custom => vec!["--format=custom".into()],
            Format::Directory { jobs } => vec!["--format=directory".into(), format!("--jobs={jobs}")],
        }
    }

    /// `pg_dump -Fc`, `pg_dump -Fd -j 4`: what the user reads.
    pub fn label(self) -> String {
        match self {
            Format::Custom => "pg_dump -Fc".into(),
            Format::Directory { jobs } => format!("pg_dump -Fd -j {jobs}"),
        }
    }

    /// What the destination will be: `a file` or `a directory`.
    pub fn noun(self) -> &'static str {
        match self {
            Format::Custom => "a file",
            Format::Directory { .. } => "a directory",
        }
    }
}

/// The temporary name of `dest` while it is written: `.<name>.partial` beside it.
pub fn partial_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.partial"))
}

/// Removes a file, or a directory and everything in it; nothing there is no error. A directory
/// is tried again for a moment: a pg_dump worker that has not yet noticed its leader's end may
/// still create a file in it.
pub fn remove(path: &Path) {
    for _ in 0..20 {
        match std::fs::symlink_metadata(path) {
            Err(_) => return,
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
        if std::fs::symlink_metadata(path).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bytes of a dump: a file's size, or the sum of a directory's files (pg_dump -Fd writes
/// no subdirectories).
pub fn size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum(),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Whether `path` is something `pg_restore` reads: a file, or a directory pg_dump -Fd wrote (it
/// holds `toc.dat`, which pg_dump writes when it closes the archive: a directory without it is
/// no dump, or not a finished one).
pub fn is_dump(path: &Path) -> bool {
    path.is_file() || (path.is_dir() && path.join("toc.dat").is_file())
}

/// The dump being written: removed unless it was renamed into place.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove(&p);
        }
    }
}

/// How pg_dump ended.
pub enum Ended {
    /// Renamed into place; its size.
    Complete(u64),
    /// pg_dump failed (the partial dump is already removed): its exit and what it said.
    Failed { status: ExitStatus, stderr: String },
}

/// A running pg_dump writing `dest` under its partial name.
pub struct Writing {
    child: proc::Registered,
    stderr: Option<std::thread::JoinHandle<String>>,
    partial: Partial,
    tmp: PathBuf,
    dest: PathBuf,
    format: Format,
    progress: bool,
    start: Instant,
    last_report: Instant,
}

impl Writing {
    /// Starts `pg_dump` (`cmd`: the program and its connection) writing `dest` in `format`:
    /// creates the directory of `dest` (0700) and the partial dump, private before pg_dump
    /// writes a byte of it (a 0600 file it truncates, keeping the mode; an empty 0700 directory,
    /// which pg_dump -Fd fills). `progress`: a line on stderr every 10 s.
    pub fn start(cmd: &mut Command, format: Format, dest: &Path, progress: bool) -> Result<Writing> {
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).context("the dump path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let tmp = partial_path(dest);
        // What a killed run left under this name.
        remove(&tmp);
        let partial = Partial(Some(tmp.clone()));
        match format {
            Format::Custom => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
            }
            Format::Directory { .. } => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&tmp)
                    .with_context(|| format!("creating {}", tmp.display()))?;
            }
        }
        cmd.args(format.args()).arg("--file").arg(&tmp);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = proc::Registered::spawn(cmd)?;
        let mut stderr = child.child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Ok(Writing {
            child,
            stderr: Some(reader),
            partial,
            tmp,
            dest: dest.to_path_buf(),
            format,
            progress,
            start: Instant::now(),
            last_report: Instant::now(),
        })
    }

    /// `None` while pg_dump runs (a progress line every 10 s); then how it ended. Interrupted (a
    /// signal reached pg_dump through [`proc`]'s signal thread): the error, the partial dump
    /// removed.
    pub fn poll(&mut self) -> Result<Option<Ended>> {
        let Some(status) = self.child.child.try_wait()? else {
            if self.progress && self.last_report.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "  dumping: {} written ({} so far)",
                    human_size(size(&self.tmp) as i64),
                    elapsed(self.start.elapsed())
                );
                self.last_report = Instant::now();
            }
            return Ok(None);
        };
        let stderr = self.stderr.take().map(|r| r.join().unwrap_or_default()).unwrap_or_default();
        proc::check_interrupt()?;
        if !status.success() {
            drop(std::mem::replace(&mut self.partial, Partial(None)));
            return Ok(Some(Ended::Failed { status, stderr }));
        }
        self.publish()?;
        Ok(Some(Ended::Complete(size(&self.dest))))
    }

    /// Polls every 100 ms until pg_dump ends.
    pub fn wait(mut self) -> Result<Ended> {
        loop {
            if let Some(ended) = self.poll()? {
                return Ok(ended);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Private modes (pg_dump -Fd creates its files by the umask, 0644 as a rule; they sat in a
    /// 0700 directory meanwhile), then the rename into place.
    fn publish(&mut self) -> Result<()> {
        let private = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("making {} private", p.display()))
        };
        if let Format::Directory { .. } = self.format {
            for entry in std::fs::read_dir(&self.tmp).with_context(|| format!("reading {}", self.tmp.display()))? {
                private(&entry?.path(), 0o600)?;
            }
            private(&self.tmp, 0o700)?;
        } else {
            private(&self.tmp, 0o600)?;
        }
        std::fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("renaming {} to {}", self.tmp.display(), self.dest.display()))?;
        self.partial.0 = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_is_the_custom_file_more_a_directory() {
        assert_eq!(Format::with_jobs(0), Format::Custom);
        assert_eq!(Format::with_jobs(1), Format::Custom);
        assert_eq!(Format::with_jobs(4), Format::Directory { jobs: 4 });
        assert_eq!(Format::with_jobs(1).args(), ["--format=custom"]);
        assert_eq!(Format::with_jobs(2).args(), ["--format=directory", "--jobs=2"]);
        assert_eq!(Format::with_jobs(2).label(), "pg_dump -Fd -j 2");
    }

    #[test]
    fn a_directory_is_a_dump_only_with_its_table_of_contents_and_is_sized_and_removed_whole() {
        let dir = std::env::temp_dir().join(format!("xtask-dump-unit-{}", std::process::id()));
        let d = dir.join("prod-1.dump");
        std::fs::create_dir_all(&d).unwrap();
        assert!(!is_dump(&d));
        std::fs::write(d.join("3001.dat.gz"), [0u8; 100]).unwrap();
        assert!(!is_dump(&d));
        std::fs::write(d.join("toc.dat"), [0u8; 20]).unwrap();
        assert!(is_dump(&d));
        assert_eq!(size(&d), 120);
        assert_eq!(partial_path(&d), dir.join(".prod-1.dump.partial"));
        remove(&d);
        assert!(!d.exists());
        let f = dir.join("prod-2.dump");
        std::fs::write(&f, b"PGDMP").unwrap();
        assert!(is_dump(&f) && size(&f) == 5);
        remove(&f);
        assert!(!f.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
