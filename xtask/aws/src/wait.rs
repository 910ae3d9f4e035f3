//! Waiting on AWS: interruptible sleeps and polling with progress on stderr.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use xtask::error::fail;
use xtask::proc;
use xtask::time::elapsed;

/// Sleeps `d`, waking early (with `Interrupted`) when a signal arrives.
pub async fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        proc::check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(100))).await;
    }
}

/// One look at the thing being waited for.
pub enum Poll<T> {
    Done(T),
    /// Still on its way; the status as AWS words it (e.g. `creating`, `42%`).
    Pending(String),
}

/// Polls every `every` until `check` says done, up to `limit`, printing the status when it
/// changes and at least once a minute, with the elapsed time. A signal ends the wait at once.
pub async fn until<T, F, Fut>(what: &str, every: Duration, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>>>,
{
    let start = Instant::now();
    let mut shown: Option<(String, Instant)> = None;
    loop {
        proc::check_interrupt()?;
        match check().await? {
            Poll::Done(v) => {
                if shown.is_some() {
                    eprintln!("  {what}: done after {}", elapsed(start.elapsed()));
                }
                return Ok(v);
            }
            Poll::Pending(status) => {
                let due = match &shown {
                    None => true,
                    Some((last, at)) => *last != status || at.elapsed() >= Duration::from_secs(60),
                };
                if due {
                    eprintln!("  {what}: {status} ({} so far)", elapsed(start.elapsed()));
                    shown = Some((status, Instant::now()));
                }
            }
        }
        if start.elapsed() >= limit {
            return Err(fail(
                format!("gave up {what} after {}", elapsed(start.elapsed())),
                "look at the AWS console for why it is slow, then run again",
            ));
        }
        pause(every).await?;
    }
}
