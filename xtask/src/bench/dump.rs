//! `cargo xtask bench dump`: `clone-prod`'s parallel dump (`pg_dump -Fd -j 2`) against the
//! single-stream dump it replaces (`pg_dump -Fc`), through a `command`-style tunnel, measured in
//! the same run on the same database, reported as a ratio (target in docs/performance.md).
//!
//! "Production": `--tables` tables of `--rows` rows each, of one size (an order-like row: ids,
//! a timestamp, an amount, a status, a line of text), frozen and analyzed, on a throwaway cluster
//! with TLS on (RDS is reached with `sslmode=require`; the connection is clone-prod's URL). The
//! tunnel: the `--tunnel-command` forwarder of clone-prod's tests (`xtask/aws/tests/support/
//! standin.py forward`, a thread pair per connection), run directly as the shell line would run
//! it, listening on a free port in front of the server. Both sides are written by the very code
//! clone-prod runs ([`crate::pg::dump::Writing`]: the partial name, the modes, the rename), in
//! turn, the order alternating run by run, each after a CHECKPOINT.
//!
//! Then, unless `--skip-diagnosis`, the same pair without the forwarder and, through it, without
//! compression (`-Z 0`), and for every cell the CPU seconds of pg_dump, of the forwarder and of
//! the rest (the server), from /proc: where the time goes on this machine.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::median;
use crate::config::find_workspace_root;
use crate::error::fail;
use crate::flags::BenchDump;
use crate::pg::cluster::{free_port, Throwaway};
use crate::pg::dump::{self, Ended, Format, Writing};
use crate::pg::{client, human_size, tools, url::encode, PgUrl, Server};
use crate::term::step;
use crate::{proc, time};

pub fn run(flags: BenchDump) -> Result<()> {
    let root = find_workspace_root(&std::env::current_dir()?)?;
    let script = root.join("xtask/aws/tests/support/standin.py");
    if !script.is_file() {
        return Err(fail(format!("{} not found", script.display()), "run from this repository's checkout"));
    }
    let pg_dump = tools::find("pg_dump")?;
    let cluster = Throwaway::start_with(&std::env::temp_dir(), "xtask-bench-dump", &["max_wal_size = 4GB"], true)?;
    let admin = cluster.cluster.url("postgres")?;
    let server = Server::connect(admin.clone(), "postgres")?;
    crate::term::announce(format_args!(
        "benchmark server: PostgreSQL {} (throwaway cluster, fsync on, TLS on)",
        server.version
    ));

    let db = "bench_prod";
    step(&format!("production: {} tables of {} rows each", flags.tables, flags.rows), || {
        server.exec("postgres", &format!("CREATE DATABASE {db}"))?;
        let mut sql = String::new();
        for t in 1..=flags.tables {
            sql.push_str(&format!(
                "CREATE TABLE public.orders_{t} (id bigint PRIMARY KEY, customer int NOT NULL, placed timestamptz NOT NULL, \
                 amount numeric(12,2) NOT NULL, status text NOT NULL, note text); \
                 INSERT INTO public.orders_{t} SELECT g, (g * 7919) % 100000, timestamptz '2024-01-01' + g * interval '37 seconds', \
                 (g * 31 % 100000) / 100.0, (ARRAY['new','paid','shipped','returned'])[1 + g % 4], \
                 'order ' || g || ' of customer ' || (g * 7919) % 100000 || ': ' || md5(g::text || '{t}') \
                 FROM generate_series(1::bigint, {}) g; ",
                flags.rows
            ));
        }
        server.exec(db, &sql)?;
        server.exec(db, "VACUUM (FREEZE, ANALYZE)")
    })?;
    let size = server.database(db)?.map(|d| human_size(d.size_bytes)).unwrap_or_default();

    // The tunnel, as clone-prod's tests give it: `python3 standin.py forward --listen
    // {local_port} --to HOST:PORT …`.
    let (_, server_port) = admin.host_port();
    let listen = free_port()?;
    let log = cluster.dir().join("forwarder.log");
    let sh = xshell::Shell::new().context("reading the current directory")?;
    let (to, listen_arg) = (format!("127.0.0.1:{server_port}"), listen.to_string());
    let mut forwarder: Command = xshell::cmd!(
        sh,
        "python3 {script} forward --listen {listen_arg} --to {to} --expect-host bench.rds.amazonaws.com --log {log}"
    )
    .into();
    forwarder.stdin(std::process::Stdio::null());
    let forwarder = proc::Registered::spawn(&mut forwarder).map_err(|e| {
        fail(format!("{e:#}"), "install Python 3 (the forwarder is xtask/aws/tests/support/standin.py)")
    })?;
    let forwarder_pid = forwarder.child.id();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err(fail("the forwarder did not listen within 20 s", "check that `python3` runs"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // clone-prod's URL (`dump::Target::url`), to the forwarder or straight to the server.
    let url = |port: u16| -> Result<PgUrl> {
        PgUrl::parse(&format!(
            "postgres://{}:{}@127.0.0.1:{port}/{db}?sslmode=require&connect_timeout=20&application_name=xtask-db%20clone-prod",
            encode(admin.user().unwrap_or("postgres")),
            encode(admin.password().unwrap_or_default()),
        ))
    };
    let dir = cluster.dir().join("dumps");
    let mut n = 0;
    let mut one = |format: Format, port: u16, extra: &[&str]| -> Result<Sample> {
        n += 1;
        let dest = dir.join(format!("prod-{n}.dump"));
        let mut cmd = client::command(&pg_dump, &[&["--no-password"], extra].concat(), &url(port)?, &[])?;
        server.exec("postgres", "CHECKPOINT")?;
        let before = Cpu::now(forwarder_pid);
        let start = Instant::now();
        let ended = Writing::start(&mut cmd, format, &dest, false)?.wait()?;
        let took = start.elapsed();
        let cpu = Cpu::now(forwarder_pid).since(&before);
        proc::check_interrupt()?;
        let bytes = match ended {
            Ended::Complete(bytes) => bytes,
            Ended::Failed { status, stderr } => {
                return Err(fail(
                    format!("pg_dump failed ({}): {}", proc::describe(status), stderr.trim()),
                    "see above",
                ))
            }
        };
        dump::remove(&dest);
        Ok(Sample { took, bytes, cpu })
    };

    let single = Format::Custom;
    let parallel = Format::with_jobs(flags.jobs.max(2));
    let runs = flags.runs.max(1);
    let mut cells: Vec<(&str, u16, Vec<&str>)> =
        vec![("through the forwarder (clone-prod's `command` tunnel)", listen, vec![])];
    if !flags.skip_diagnosis {
        cells.push(("direct, no forwarder (diagnosis)", server_port, vec![]));
        cells.push(("through the forwarder, uncompressed `-Z 0` (diagnosis)", listen, vec!["--compress=0"]));
    }
    step("warm-up: one untimed dump of each kind", || {
        one(single, listen, &[])?;
        one(parallel, listen, &[]).map(drop)
    })?;
    let mut rows = Vec::new();
    for (label, port, extra) in &cells {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..runs {
            crate::term::announce(format_args!("{label}: run {}/{runs}", i + 1));
            // Alternate which goes first, so neither always runs on a warmer machine.
            if i % 2 == 0 {
                a.push(one(single, *port, extra)?);
                b.push(one(parallel, *port, extra)?);
            } else {
                b.push(one(parallel, *port, extra)?);
                a.push(one(single, *port, extra)?);
            }
        }
        rows.push((*label, Sample::median(a), Sample::median(b)));
    }
    let connections = std::fs::read_to_string(&log).unwrap_or_default().matches("\"connection\": true").count();
    drop(forwarder);

    println!(
        "\nmedians of {runs}; production: {} tables of {} rows, {size}; PostgreSQL {}; {} cores; TLS on\n",
        flags.tables,
        flags.rows,
        server.version,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("| cell | {} (today) | {} | speed-up | target |", single.label(), parallel.label());
    println!("| --- | ---: | ---: | ---: | --- |");
    for (i, (label, a, b)) in rows.iter().enumerate() {
        let ratio = a.took.as_secs_f64() / b.took.as_secs_f64().max(1e-9);
        let target = match i {
            0 if ratio >= 1.5 => "≥ 1.5x: met",
            0 => "≥ 1.5x: NOT met",
            _ => "",
        };
        println!(
            "| {label} | {} ({}) | {} ({}) | {ratio:.2}x | {target} |",
            time::elapsed(a.took),
            human_size(a.bytes as i64),
            time::elapsed(b.took),
            human_size(b.bytes as i64)
        );
    }
    println!("\nCPU seconds of the median run (pg_dump with its workers / the forwarder / the server and the rest; the machine's busy share):\n");
    println!("| cell | {} | {} |", single.label(), parallel.label());
    println!("| --- | --- | --- |");
    for (label, a, b) in &rows {
        println!("| {label} | {} | {} |", a.cpu.describe(a.took), b.cpu.describe(b.took));
    }
    println!("\n{connections} connections crossed the forwarder in all.");
    Ok(())
}

/// One timed dump.
struct Sample {
    took: Duration,
    bytes: u64,
    cpu: Cpu,
}

impl Sample {
    /// The run of median time.
    fn median(mut v: Vec<Sample>) -> Sample {
        let m = median(&v.iter().map(|s| s.took).collect::<Vec<_>>());
        let i = v.iter().position(|s| s.took == m).unwrap_or(0);
        v.swap_remove(i)
    }
}

/// CPU time, in seconds: the machine's busy time (all cores), our reaped children's (pg_dump and
/// its workers, which it reaps), the forwarder's. Zero where /proc cannot tell (not Linux).
#[derive(Default, Clone, Copy)]
struct Cpu {
    busy: f64,
    children: f64,
    forwarder: f64,
}

impl Cpu {
    fn now(forwarder: u32) -> Cpu {
        let ticks = 100.0; // USER_HZ, what /proc counts in on Linux
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let f: Vec<f64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal
                (f.len() >= 8).then(|| (f[..8].iter().sum::<f64>() - f[3] - f[4]) / ticks)
            })
            .unwrap_or(0.0);
        let forwarder = std::fs::read_to_string(format!("/proc/{forwarder}/stat"))
            .ok()
            .and_then(|s| {
                // After the command's `(name)`: fields 14 and 15 are utime and stime.
                let rest = s.rsplit_once(") ")?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
            })
            .unwrap_or(0.0);
        // SAFETY: getrusage fills the struct it is given.
        let children = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
            let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
            t(u.ru_utime) + t(u.ru_stime)
        };
        Cpu { busy, children, forwarder }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            busy: self.busy - before.busy,
            children: self.children - before.children,
            forwarder: self.forwarder - before.forwarder,
        }
    }

    fn describe(&self, took: Duration) -> String {
        if self.busy <= 0.0 {
            return "(no /proc)".into();
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let rest = (self.busy - self.children - self.forwarder).max(0.0);
        format!(
            "{:.1} / {:.1} / {:.1}; busy {:.0}%",
            self.children,
            self.forwarder,
            rest,
            100.0 * self.busy / (took.as_secs_f64() * cores)
        )
    }
}
