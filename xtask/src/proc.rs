//! Running external programs: interrupt-aware, with output captured for error messages.
//!
//! Every child is registered while it runs. On SIGINT, SIGTERM or SIGHUP the signal thread
//! records the signal and interrupts the registered children (SIGINT, then SIGTERM after 5 s to those
//! still running; programs the cleanup starts after the signal are left to finish); the code waiting on them then
//! fails with [`Interrupted`], and the guards on the way up remove whatever was half-made
//! (`pg::Creating`, which every database build holds until `pg::staging::publish`). Nothing is
//! left to the default signal action, which would kill us before cleanup.
//!
//! Every program's command line is written as an `xshell::cmd!` expression (argv as written: no
//! shell, no word splitting), in one place per program, in the module that owns that outside
//! world (`git`, `pg::client` for psql, pg_dump and pg_restore, `pg::cluster` for initdb and
//! pg_ctl, …), and run here as the `std::process::Command` it converts into: xshell has no
//! child registry and no interrupts. No `Command::new` outside this file. Secrets go in the
//! environment, never argv.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};

use anyhow::{bail, Context, Result};

use crate::error::Interrupted;

static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// How many signals have arrived. Counted before [`SIGNAL`] is set: whoever sees the signal
/// and starts a program (the cleanup) starts it under a count that the signal does not reach.
static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// Registered children.
static CHILDREN: Mutex<Vec<Tracked>> = Mutex::new(Vec::new());

#[derive(Clone)]
struct Tracked {
    pid: u32,
    /// For long-lived children (psql sessions): whether they are busy. An idle session is not
    /// signalled (psql would exit; cleanup still needs it).
    busy: Option<Arc<AtomicBool>>,
    /// [`SIGNALS`] when it was started: signal number `n` reaches only children started before
    /// it (`born < n`), never the cleanup's.
    born: u32,
}

/// The children signal number `n` interrupts: started before it, and busy if they say.
fn reached_by(children: &[Tracked], n: u32) -> Vec<u32> {
    children
        .iter()
        .filter(|c| c.born < n && c.busy.as_ref().map_or(true, |b| b.load(Ordering::SeqCst)))
        .map(|c| c.pid)
        .collect()
}

/// Installs the signal thread (idempotent).
pub fn install_signal_handlers() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
            .expect("installing signal handlers");
        std::thread::spawn(move || {
            for sig in signals.forever() {
                // The first signal decides the exit code (a forwarded SIGINT may be followed by a
                // SIGTERM from the same parent).
                let n = SIGNALS.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
                // SIGINT first: psql answers it by cancelling the statement on the server (so a
                // CREATE DATABASE is rolled back, not finished behind our back), pg_dump stops.
                // Whatever still runs after a grace period gets SIGTERM.
                // Only the children that were running at the signal: the cleanup starts
                // programs of its own after it (dropping what a migration made, a half-built
                // database), and those must run to the end however long the cleanup takes on a
                // loaded machine. A second Ctrl-C interrupts them too.
                let signalled = signal_children(libc::SIGINT, n);
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    let still: Vec<u32> = registered().into_iter().map(|c| c.pid).collect();
                    for pid in signalled.into_iter().filter(|p| still.contains(p)) {
                        // SAFETY: plain syscall on a child we have not reaped yet (still registered).
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                    }
                });
            }
        });
    });
}

fn registered() -> Vec<Tracked> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Sends `sig` to the children signal number `n` reaches; the pids signalled.
fn signal_children(sig: i32, n: u32) -> Vec<u32> {
    let signalled = reached_by(&registered(), n);
    for &pid in &signalled {
        // SAFETY: plain syscall on a child we have not reaped yet (it is still registered).
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
    signalled
}

/// The signal that interrupted this run, if any.
pub fn interrupted() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Fails with [`Interrupted`] once a signal has arrived: call between steps.
pub fn check_interrupt() -> Result<()> {
    match interrupted() {
        Some(sig) => Err(Interrupted(sig).into()),
        None => Ok(()),
    }
}

/// A running child that is terminated when we are interrupted.
pub struct Registered {
    pub child: Child,
}

impl Registered {
    /// Spawns and registers. Not refused after a signal: cleanup runs programs too; steps
    /// check [`check_interrupt`] before they start.
    pub fn spawn(cmd: &mut Command) -> Result<Registered> {
        Registered::spawn_with(cmd, None)
    }

    /// Like [`Registered::spawn`], but signalled only while `busy` is set.
    ///
    /// In a process group of its own: a Ctrl-C at the terminal (SIGINT to the whole foreground
    /// group) reaches only us, and the signal thread decides which children hear of it — never an
    /// idle psql session, which would exit and leave the cleanup (dropping a half-built
    /// database) without a connection.
    pub fn spawn_with(cmd: &mut Command, busy: Option<Arc<AtomicBool>>) -> Result<Registered> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Registered::register(cmd, busy)
    }

    /// Like [`Registered::spawn`], but left in our process group, for a child that talks to the
    /// terminal (the AWS tool asks before deleting): in a group of its own it would be a
    /// background job, stopped by SIGTTIN at its first read of the terminal. It hears a Ctrl-C
    /// from the terminal and from us, and handles it itself.
    pub fn spawn_foreground(cmd: &mut Command) -> Result<Registered> {
        Registered::register(cmd, None)
    }

    fn register(cmd: &mut Command, busy: Option<Arc<AtomicBool>>) -> Result<Registered> {
        // Read before the spawn: a program started before a signal is one it interrupts.
        let born = SIGNALS.load(Ordering::SeqCst);
        let child = cmd.spawn().with_context(|| format!("starting `{}`", display(cmd)))?;
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(Tracked { pid: child.id(), busy, born });
        Ok(Registered { child })
    }

    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.child.wait()?)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let pid = self.child.id();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).retain(|c| c.pid != pid);
    }
}

/// How a program is shown in messages: program and arguments (never secrets: those are in the
/// environment), without directories.
pub fn display(cmd: &Command) -> String {
    let prog = cmd.get_program().to_string_lossy();
    let prog = prog.rsplit('/').next().unwrap_or(&prog).to_string();
    let mut s = prog;
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains([' ', '"', '\'']) {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs to completion with `stdin` fed in; returns stdout. On failure the error holds the
/// command and the tail of its stderr.
pub fn capture(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String> {
    let (status, out, err) = output(cmd, stdin)?;
    if !status.success() {
        check_interrupt()?;
        bail!("{}", failure_message(cmd, status, &err));
    }
    String::from_utf8(out).with_context(|| format!("`{}` printed non-UTF-8 output", display(cmd)))
}

/// Runs to completion with `stdin` fed in; its status, stdout and stderr, whatever the status.
pub fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut reg = Registered::spawn(cmd)?;
    let stdin_thread = match (stdin, reg.child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let mut err_pipe = reg.child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let mut out = Vec::new();
    reg.child.stdout.take().expect("piped").read_to_end(&mut out)?;
    let status = reg.wait()?;
    if let Some(t) = stdin_thread {
        let _ = t.join();
    }
    let err = err_thread.join().unwrap_or_default();
    Ok((status, out, err))
}

/// Starts `cmd` detached — in a session of its own, so a Ctrl-C here does not reach it — with
/// stdin closed and stdout and stderr appended to `log`; `keep_fds` (at most 8) become its
/// descriptors 3, 4, … in order (e.g. held locks, released when it closes them or exits). Not
/// registered: it outlives us.
pub fn spawn_detached(cmd: &mut Command, log: &std::path::Path, keep_fds: &[i32]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    anyhow::ensure!(keep_fds.len() <= 8, "at most 8 descriptors are handed on");
    let keep_fds = keep_fds.to_vec();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // SAFETY: setsid, fcntl and dup2 are async-signal-safe and touch nothing of the parent.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // Through copies above them first, so that no dup2 overwrites a descriptor still to
            // be moved (no allocation here: a fixed array).
            let mut high = [-1; 8];
            for (i, fd) in keep_fds.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3 + high.len() as i32);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().take(keep_fds.len()).enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()?;
    Ok(())
}

/// Runs to completion, its stdout and stderr going to our stderr (stdout is for data).
pub fn show(cmd: &mut Command) -> Result<()> {
    let to_stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    cmd.stdin(Stdio::null()).stdout(Stdio::from(to_stderr));
    let mut reg = Registered::spawn(cmd)?;
    let status = reg.wait()?;
    if !status.success() {
        check_interrupt()?;
        bail!("`{}` failed ({})", display(cmd), describe(status));
    }
    Ok(())
}

/// [`show`], its stderr passed through as it comes and its last lines kept: when it fails, the
/// error says why in the child's own words (a migrator's `ERROR: division by zero`), not only
/// its exit status. Each of `secrets` is written `***` in that error (the child's own stream is
/// passed through untouched).
pub fn show_telling_why(cmd: &mut Command, secrets: &[&str]) -> Result<()> {
    let to_stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    cmd.stdin(Stdio::null()).stdout(Stdio::from(to_stderr)).stderr(Stdio::piped());
    let mut reg = Registered::spawn(cmd)?;
    let mut from_child = reg.child.stderr.take().context("the child's stderr")?;
    let tee = std::thread::spawn(move || {
        const KEEP: usize = 8192;
        let (mut tail, mut chunk) = (Vec::new(), [0u8; 4096]);
        while let Ok(n @ 1..) = from_child.read(&mut chunk) {
            let _ = std::io::stderr().write_all(&chunk[..n]);
            tail.extend_from_slice(&chunk[..n]);
            if tail.len() > 2 * KEEP {
                tail.drain(..tail.len() - KEEP);
            }
        }
        tail
    });
    let status = reg.wait()?;
    let tail = tee.join().unwrap_or_default();
    if !status.success() {
        check_interrupt()?;
        let mut said = failure_message(cmd, status, &tail);
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            said = said.replace(secret, "***");
        }
        bail!("{said}");
    }
    Ok(())
}

pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// `` `psql -X ...` failed (exit status 3): ERROR: ... `` — the last few meaningful stderr lines.
pub fn failure_message(cmd: &Command, status: ExitStatus, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        format!("`{}` failed ({})", display(cmd), describe(status))
    } else {
        format!("`{}` failed ({}): {}", display(cmd), describe(status), tail)
    }
}

/// Runs `producer | consumer` process to process: the producer's stdout is the consumer's stdin
/// (nothing in memory, no temp file, no shell). Fails when either fails, naming both.
pub fn pipe(producer: &mut Command, consumer: &mut Command) -> Result<()> {
    pipe_with(producer, consumer, || Ok(()))
}

/// [`pipe`], running `meanwhile` once the producer has started and before the consumer starts
/// (what the consumer needs is made while the producer gets going; the pipe holds its first
/// output). When `meanwhile` fails, the producer is ended and its error returned.
pub fn pipe_with(producer: &mut Command, consumer: &mut Command, meanwhile: impl FnOnce() -> Result<()>) -> Result<()> {
    producer.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut first = Registered::spawn(producer)?;
    if let Err(e) = meanwhile() {
        let _ = first.child.kill();
        let _ = first.wait();
        return Err(e);
    }
    let out = first.child.stdout.take().expect("piped");
    consumer.stdin(Stdio::from(out)).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut second = Registered::spawn(consumer)?;
    let drain = |reg: &mut Registered| {
        let mut pipe = reg.child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let (e1, e2) = (drain(&mut first), drain(&mut second));
    let s2 = second.wait()?;
    // If the consumer stopped early the producer gets SIGPIPE; make sure it is not left behind.
    if !s2.success() {
        let _ = first.child.kill();
    }
    let s1 = first.wait()?;
    let (e1, e2) = (e1.join().unwrap_or_default(), e2.join().unwrap_or_default());
    if s1.success() && s2.success() {
        return Ok(());
    }
    check_interrupt()?;
    // The consumer's complaint is usually the cause; a producer killed by our kill is not.
    if !s2.success() {
        bail!("{}", failure_message(consumer, s2, &e2));
    }
    bail!("{}", failure_message(producer, s1, &e1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_child_s_last_words_are_in_the_error_its_secrets_not() {
        let script = "for i in $(seq 1 5000); do echo progress $i >&2; done; echo 'ERROR:  division by zero at s3cret' >&2; exit 3";
        let err = show_telling_why(Command::new("sh").args(["-c", script]), &["s3cret"]).unwrap_err().to_string();
        assert!(
            err.contains("(exit status 3): progress 4999 / progress 5000 / ERROR:  division by zero at ***"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        show_telling_why(Command::new("sh").args(["-c", "echo fine >&2"]), &[]).unwrap();
    }

    #[test]
    fn pipe_streams_and_reports_the_failing_side() {
        pipe(Command::new("printf").arg("a\\nb\\n"), Command::new("grep").arg("-q").arg("b")).unwrap();
        let err = pipe(Command::new("printf").arg("a\\n"), Command::new("grep").arg("-q").arg("zzz")).unwrap_err();
        assert!(err.to_string().starts_with("`grep -q zzz` failed (exit status 1)"), "{err}");
        let err = pipe(&mut Command::new("false"), &mut Command::new("cat")).unwrap_err();
        assert!(err.to_string().starts_with("`false` failed"), "{err}");
        // What runs in between sees the producer started, and its failure ends the producer.
        let mut ran = false;
        pipe_with(Command::new("printf").arg("b\\n"), Command::new("grep").arg("-q").arg("b"), || {
            ran = true;
            Ok(())
        })
        .unwrap();
        assert!(ran);
        let start = std::time::Instant::now();
        let err = pipe_with(Command::new("sleep").arg("30"), &mut Command::new("cat"), || anyhow::bail!("no target"))
            .unwrap_err();
        assert!(err.to_string() == "no target" && start.elapsed().as_secs() < 10, "{err}");
    }

    /// A signal reaches the children started before it, busy ones only, and never the programs
    /// the cleanup starts after it (a rehearsal's undo was killed mid-way when the signal
    /// thread ran after the cleanup had started); the next signal reaches those too.
    #[test]
    fn a_signal_reaches_only_children_started_before_it() {
        let idle = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicBool::new(true));
        let t = |pid, busy: &Option<Arc<AtomicBool>>, born| Tracked { pid, busy: busy.clone(), born };
        let children = [
            t(10, &None, 0),
            t(11, &Some(busy.clone()), 0),
            t(12, &Some(idle.clone()), 0),
            t(20, &None, 1),
            t(21, &Some(busy), 1),
        ];
        assert_eq!(reached_by(&children, 1), [10, 11]);
        assert_eq!(reached_by(&children, 2), [10, 11, 20, 21]);
        idle.store(true, Ordering::SeqCst);
        assert_eq!(reached_by(&children, 1), [10, 11, 12]);
    }

    #[test]
    fn capture_reports_stderr_tail() {
        let err = capture(Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"]), None).unwrap_err();
        assert!(err.to_string().ends_with("failed (exit status 3): one / two"), "{err}");
        assert_eq!(capture(&mut Command::new("cat"), Some(b"hi")).unwrap(), "hi");
    }
}
