//! Seeding a new worktree's `target/` from the worktree the xtask runs in, so that its first
//! `cargo build` compiles only what differs from that worktree's build.
//!
//! Why not one `CARGO_TARGET_DIR` for all worktrees: cargo names a workspace crate's artifacts by
//! its path *relative to the workspace root*, so `app` in worktree A and `app` in worktree B are
//! the same file in a shared directory — B's build overwrites A's, and A's `cargo run` can then
//! judge it fresh and run B's binary. Each worktree keeps its own `target/` here.
//!
//! What is seeded: for every unit (a `.fingerprint/<name>-<hash>/` directory) that is not one of
//! the workspace's own crates, its fingerprint and build-script directories are copied (small;
//! cargo rewrites files there in place) and its artifacts in `deps/` are hard-linked (rustc and
//! the linkers write a rebuilt artifact to a new file and rename it over the old, so a link is
//! never written through; a dependency's artifact name changes with its version, features and
//! flags) — except the dep-info files (`deps/*.d`), which rustc rewrites in place and which name
//! the worktree's own paths (a build script's `OUT_DIR`): those are copied. Modification times
//! are kept: cargo's freshness check compares them. Incremental caches are left out (an edit in
//! the new worktree then rebuilds that crate whole, once).
//!
//! A unit of the workspace's own members is seeded too, but only when nothing can make it stale
//! there ([`own_unit`]): cargo's unit hash and fingerprint of a member are the same in every
//! worktree (paths relative to the workspace root), and what cargo then judges by modification
//! time — the files in the unit's dep-info, each newer than the dep-info file means stale — is
//! checked here by content instead: the unit is fresh in the source worktree, every file it was
//! built from lies in its package and is byte-identical in the new worktree, and it carries no
//! compile-time path of the source worktree (an `env!` value, e.g. `CARGO_MANIFEST_DIR`, that
//! cargo does not track). Only then is its dep-info file dated at the start of the seed, so that
//! cargo finds it fresh and any edit made since finds it stale. A unit with a build script's
//! `rerun-if-changed`, or files outside its package (the app's `sqlx::migrate!` reads
//! `../migrations`), is left to cargo.

use crate::flock::{self, Mode};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::time;

/// Seeds `new`'s (a new worktree's) `target/` from `from`'s, the worktree the command runs in:
/// in the background, holding cargo's own lock on each of the new profile directories
/// ([`PROFILES`]), so that a `cargo` command started there meanwhile waits for the one it builds
/// in ("Blocking waiting for file lock on …") instead of racing it. The xtask's
/// directory comes first and its lock is released as soon as it is seeded: a `cargo xtask` run
/// right away waits only for that part, a `cargo build` for the whole. Returns the line for the
/// report, if any. `from` and `new` are the tops of the two worktrees; the seeder's output goes
/// to `log`.
pub fn seed(from: &Path, new: &Path, log: &Path) -> Result<Option<String>> {
    if std::env::var_os("CARGO_TARGET_DIR").is_some() || std::env::var_os("CARGO_BUILD_TARGET_DIR").is_some() {
        return Ok(Some("CARGO_TARGET_DIR is set: every worktree builds there (not seeded)".into()));
    }
    if configures_target_dir(new) || configures_target_dir(from) {
        return Ok(Some("a .cargo/config.toml sets target-dir: not seeded".into()));
    }
    let source = from.join("target");
    let to = new.join("target");
    let profiles: Vec<&str> =
        PROFILES.iter().copied().filter(|p| source.join(p).join(".fingerprint").is_dir()).collect();
    if profiles.is_empty() {
        return Ok(Some(format!("nothing built in {} yet: not seeded", source.display())));
    }
    if same_file(&source, &to) {
        return Ok(None);
    }
    if to.exists() {
        return Ok(Some(format!("{} exists: left as it is", to.display())));
    }
    let mut locks = Vec::new();
    for profile in &profiles {
        let dir = to.join(profile);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(".cargo-lock"))?;
        if !flock::try_lock(&lock, Mode::Exclusive) {
            return Ok(Some(format!("{} is being built already: not seeded", dir.display())));
        }
        locks.push(lock);
    }
    // What cargo learned of rustc (`rustc -vV` and the target's file names: ~50 ms of the first
    // `cargo` command in an empty target/). Keyed by rustc's own fingerprint, which cargo checks:
    // another toolchain in the new worktree makes cargo ask rustc again.
    let _ = std::fs::copy(source.join(".rustc_info.json"), to.join(".rustc_info.json"));
    match spawn_seeder(new, log, &source, &to, &profiles, &locks) {
        Ok(()) => Ok(Some(format!(
            "target/ is being seeded from {} in the background (`cargo xtask` there waits for the xtask's part, a fraction of a second; `cargo build` for the whole, a second or two): its first build compiles only what differs from the build here",
            source.display()
        ))),
        // Could not start it: do it here.
        Err(_) => {
            let start = Instant::now();
            let own = workspace_crates(new);
            let mut stats = Stats::default();
            for profile in &profiles {
                stats.add(copy_profile(&source.join(profile), &to.join(profile), &own)?);
            }
            Ok(Some(format!(
                "target/ seeded from {} ({} built units, {} of them this workspace's, {} files hard-linked) in {}",
                source.display(),
                stats.units,
                stats.own,
                stats.linked,
                time::elapsed(start.elapsed())
            )))
        }
    }
}

/// Waits until no seed (nor cargo) holds a lock on the `target/` of the worktree at `root`.
pub fn wait(root: &Path) {
    for profile in PROFILES {
        let Ok(lock) = std::fs::File::open(root.join("target").join(profile).join(".cargo-lock")) else { continue };
        // Released when it is closed. (Interrupted, the caller goes on removing: nothing to undo.)
        let _ = flock::lock(&lock, Mode::Exclusive);
    }
}

/// The profile directories seeded, in this order: the xtask's own (`cargo xtask` is `cargo run
/// --profile xtask`, see `.cargo/config.toml`; cargo builds it in `target/xtask/` under a lock
/// of its own), then the one `cargo build` and `cargo run` use.
pub const PROFILES: [&str; 2] = ["xtask", "debug"];

/// Starts `db seed-build-cache FROM TO PROFILE…` detached (its own session), with `locks` —
/// cargo's locks on TO's profile directories, held — as its descriptors 3, 4, …: each is
/// released when its directory is seeded, all of them when it exits, whatever ends it.
fn spawn_seeder(
    new: &Path,
    log: &Path,
    from: &Path,
    to: &Path,
    profiles: &[&str],
    locks: &[std::fs::File],
) -> Result<()> {
    let me = std::env::current_exe()?;
    let sh = xshell::Shell::new().context("reading the current directory")?;
    sh.change_dir(new);
    let mut cmd: std::process::Command = xshell::cmd!(sh, "{me} db seed-build-cache {from} {to} {profiles...}").into();
    let fds: Vec<i32> = locks.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    crate::proc::spawn_detached(&mut cmd, log, &fds)
}

/// `db seed-build-cache FROM TO PROFILE…` (hidden; started by [`seed`]): seeds each profile
/// directory of the target directory TO from FROM's, in order, and releases its lock
/// (descriptor 3 for the first, 4 for the next…) as soon as it is done. Run in the new worktree,
/// which names the workspace's own crates.
pub fn seed_into(from: &Path, to: &Path, profiles: &[String]) -> Result<()> {
    let root = crate::config::find_workspace_root(&std::env::current_dir()?)?;
    let own = workspace_crates(&root);
    for (i, profile) in profiles.iter().enumerate() {
        anyhow::ensure!(PROFILES.contains(&profile.as_str()), "not a profile seeded: {profile}");
        let start = Instant::now();
        let stats = copy_profile(&from.join(profile), &to.join(profile), &own)?;
        // Only the descriptors `seed` handed on are closed: each a lock on a profile directory.
        let fd = 3 + i as i32;
        let is_its_lock = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map_or(true, |p| p.ends_with(Path::new(profile).join(".cargo-lock")));
        if is_its_lock {
            // SAFETY: closing a descriptor nothing else in this process uses: cargo may now build there.
            unsafe { libc::close(fd) };
        }
        eprintln!(
            "{}: {} seeded from {} ({} built units, {} of them this workspace's, {} files hard-linked) in {}",
            time::now_rfc3339(),
            to.join(profile).display(),
            from.join(profile).display(),
            stats.units,
            stats.own,
            stats.linked,
            time::elapsed(start.elapsed())
        );
        for left in &stats.left {
            eprintln!("  left to cargo: {left}");
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether a `.cargo/config.toml` from `root` upwards sets `target-dir` (then cargo does not use
/// `<root>/target`, and what it uses may be shared on purpose).
fn configures_target_dir(root: &Path) -> bool {
    root.ancestors().any(|d| {
        ["config.toml", "config"].iter().any(|f| {
            std::fs::read_to_string(d.join(".cargo").join(f))
                .is_ok_and(|t| t.lines().any(|l| l.trim_start().starts_with("target-dir")))
        })
    })
}

/// The crates built from this repository's sources.
struct Own {
    /// The names under which they appear in `target/`: the packages of the workspace's members
    /// and of the workspaces it excludes (e.g. `xtask/aws`), with `-` and `_` both, and their
    /// `[lib]` and `[[bin]]` names.
    names: HashSet<String>,
    /// The root workspace's members (rustc runs in the workspace root for them): package name →
    /// its directory relative to the root. Only these can be seeded.
    members: HashMap<String, PathBuf>,
}

fn workspace_crates(root: &Path) -> Own {
    let mut names = HashSet::new();
    let mut members: HashMap<String, Option<PathBuf>> = HashMap::new();
    // (manifest, whether it belongs to the root workspace)
    let mut manifests = vec![(root.join("Cargo.toml"), true)];
    let mut seen = HashSet::new();
    while let Some((manifest, in_root)) = manifests.pop() {
        if !seen.insert(manifest.clone()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let Ok(doc) = text.parse::<toml::Table>() else { continue };
        let dir = manifest.parent().unwrap_or(root).to_path_buf();
        let table_name =
            |v: Option<&toml::Value>| v.and_then(|t| t.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        if let Some(package) = table_name(doc.get("package")) {
            if in_root {
                let rel = dir.strip_prefix(root).ok().map(Path::to_path_buf);
                // Two packages of one name: neither is seeded.
                members.entry(package.clone()).and_modify(|d| *d = None).or_insert(rel);
            }
            names.insert(package);
        }
        names.extend(table_name(doc.get("lib")));
        for bin in doc.get("bin").and_then(|b| b.as_array()).into_iter().flatten() {
            names.extend(table_name(Some(bin)));
        }
        let Some(ws) = doc.get("workspace") else { continue };
        for (key, root_ws) in [("members", in_root), ("exclude", false)] {
            for pattern in ws.get(key).and_then(|m| m.as_array()).into_iter().flatten().filter_map(|m| m.as_str()) {
                for member in expand(&dir, pattern) {
                    manifests.push((member.join("Cargo.toml"), root_ws));
                }
            }
        }
    }
    let underscored: Vec<String> = names.iter().map(|n| n.replace('-', "_")).collect();
    names.extend(underscored);
    Own { names, members: members.into_iter().filter_map(|(n, d)| Some((n, d?))).collect() }
}

/// A member path, with a trailing `/*` expanded (the glob cargo's workspaces mostly use).
fn expand(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    match pattern.strip_suffix("/*") {
        Some(parent) => std::fs::read_dir(dir.join(parent))
            .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default(),
        None => vec![dir.join(pattern)],
    }
}

#[derive(Default)]
struct Stats {
    units: usize,
    /// Of `units`, the workspace's own.
    own: usize,
    linked: usize,
    /// The workspace's own units left to cargo, and why.
    left: Vec<String>,
}

impl Stats {
    fn add(&mut self, one: Stats) {
        self.units += one.units;
        self.own += one.own;
        self.linked += one.linked;
        self.left.extend(one.left);
    }
}

/// `<name>-<16 hex digits>` → the hash.
fn unit_hash(name: &str) -> Option<(&str, &str)> {
    let (crate_name, hash) = name.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((crate_name, hash))
}

/// Unit by unit, in an order that never shows cargo a fresh-looking unit without its files:
/// its artifacts (hard links), its build-script directory, and last its fingerprint directory,
/// renamed into place complete. An interrupted seed leaves units that are either whole or absent
/// (cargo builds those).
fn copy_profile(from: &Path, to: &Path, own: &Own) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut artifacts: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for entry in std::fs::read_dir(from.join("deps")).context("reading the build's artifacts")?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stem = name.split('.').next().unwrap_or(&name);
        if let Some((_, hash)) = unit_hash(stem) {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                artifacts.entry(hash.to_string()).or_default().push(entry.path());
            }
        }
    }
    for dir in [".fingerprint", "deps", "build"] {
        std::fs::create_dir_all(to.join(dir)).with_context(|| format!("creating {}", to.join(dir).display()))?;
    }
    // The start of the seed on the file system's clock (the one that dates an edit), taken before
    // any source file is compared: what a seeded unit's dep-info is dated (see `own_unit`).
    // Then the file system's clock is let move past it, so that an edit made after a file is
    // compared is dated after `start` (its clock ticks in milliseconds).
    let fs_now = || -> Result<std::time::SystemTime> {
        let stamp = to.join(".seed-started");
        std::fs::write(&stamp, b"").with_context(|| format!("writing {}", stamp.display()))?;
        let t = std::fs::metadata(&stamp)?.modified()?;
        let _ = std::fs::remove_file(&stamp);
        Ok(t)
    };
    let start = fs_now()?;
    let mut moved = false;
    for _ in 0..1000 {
        moved = fs_now()? > start;
        if moved {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let roots = match (from.parent().and_then(Path::parent), to.parent().and_then(Path::parent)) {
        (Some(a), Some(b)) => a.canonicalize().ok().zip(b.canonicalize().ok()),
        _ => None,
    };
    let units: Vec<(String, PathBuf)> = std::fs::read_dir(from.join(".fingerprint"))
        .context("reading the build's fingerprints")?
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    // One unit, whole; what it adds to the stats.
    let seed_unit = |name: &str, path: &Path| -> Result<Stats> {
        let mut stats = Stats::default();
        let Some((crate_name, hash)) = unit_hash(name) else { return Ok(stats) };
        if to.join(".fingerprint").join(name).exists() {
            return Ok(stats);
        }
        // For one of the workspace's own units: its dep-info file, to be dated `start`.
        let mut redate = None;
        if own.names.contains(crate_name) {
            let Some((src_root, new_root)) = roots.as_ref().filter(|_| moved) else {
                let why = if moved {
                    "no worktree around the target directories"
                } else {
                    "the file system's clock did not move in a second"
                };
                stats.left.push(format!("{name}: {why}"));
                return Ok(stats);
            };
            let unit = Unit { from, name, artifacts: artifacts.get(hash).map(Vec::as_slice).unwrap_or(&[]) };
            match own
                .members
                .get(crate_name)
                .ok_or_else(|| "not a member of this workspace".to_string())
                .and_then(|pkg| own_unit(&unit, src_root, new_root, pkg, start))
            {
                Ok(dep_info) => redate = Some(dep_info),
                Err(why) => {
                    stats.left.push(format!("{name}: {why}"));
                    return Ok(stats);
                }
            }
        }
        for file in artifacts.get(hash).into_iter().flatten() {
            let link = to.join("deps").join(file.file_name().unwrap_or_default());
            if link.exists() {
                continue;
            }
            if written_in_place(file) {
                copy_file(file, &link)?;
            } else {
                // Never a copy: artifacts are large, and a seed is only worth it when it is instant.
                std::fs::hard_link(file, &link)
                    .with_context(|| format!("hard-linking {} (another file system?)", file.display()))?;
                stats.linked += 1;
            }
        }
        let build = from.join("build").join(name);
        if build.is_dir() && !to.join("build").join(name).exists() {
            copy_tree(&build, &to.join("build").join(name))?;
        }
        let partial = to.join(".fingerprint").join(format!("{name}.seeding"));
        let _ = std::fs::remove_dir_all(&partial);
        copy_tree(path, &partial)?;
        if let Some(dep_info) = &redate {
            std::fs::File::options().write(true).open(partial.join(dep_info))?.set_modified(start)?;
            stats.own += 1;
        }
        std::fs::rename(&partial, to.join(".fingerprint").join(name))?;
        stats.units += 1;
        Ok(stats)
    };
    // Units are independent (each has its own files): a few threads, since creating small files
    // is most of the time and the kernel does it on every core.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let results: Vec<Result<Stats>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<Stats> {
                    let mut stats = Stats::default();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((name, path)) = units.get(i) else { return Ok(stats) };
                        let one = match seed_unit(name, path) {
                            Ok(one) => one,
                            Err(e) => {
                                // The others stop at their next unit.
                                next.store(units.len(), std::sync::atomic::Ordering::Relaxed);
                                return Err(e);
                            }
                        };
                        stats.add(one);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a seeding thread panicked"))))
            .collect()
    });
    for r in results {
        stats.add(r?);
    }
    Ok(stats)
}

/// One unit of the source worktree's build.
struct Unit<'a> {
    /// The source's profile directory.
    from: &'a Path,
    /// Its fingerprint directory's name, `<package>-<hash>`.
    name: &'a str,
    /// Its files in `deps/`.
    artifacts: &'a [PathBuf],
}

/// Whether one of the workspace's own units can be seeded into the new worktree at `new_root`
/// (its package in `pkg`, relative to the roots) without ever looking fresh there when it is not:
/// the name of its dep-info file in its fingerprint directory, or why not.
///
/// Cargo judges such a unit by its fingerprint (a hash of the compiler, profile, features,
/// dependencies' fingerprints, the package's path relative to the workspace root…: recomputed
/// in the new worktree and compared, so any difference there rebuilds it), by the values of the
/// environment variables its dep-info lists (compared too), and by modification times: it is
/// stale when a file its dep-info lists is newer than the dep-info file, which is dated at the
/// start of its compilation. The last is what a new checkout breaks (every file there is newer),
/// and what this checks by content instead, so that redating the dep-info to `start` is true:
/// - its fingerprint has exactly that dep-info check (no build script's `rerun-if-changed`, no
///   checksums, nothing this code does not know);
/// - it is fresh in the source worktree (no file newer than its dep-info);
/// - every file rustc read for it lies in its package (cargo records those relative to the
///   package, so it looks at the new worktree's files; one elsewhere in the repository — a
///   `sqlx::migrate!("../migrations")` — it records by absolute path, the source worktree's) and
///   is byte-identical in the new worktree, and older than `start`;
/// - no environment value rustc compiled in is a path (`env!("CARGO_MANIFEST_DIR")`, `OUT_DIR`,
///   `CARGO_BIN_EXE_*`: cargo sets them and does not track them, so a copied artifact would
///   carry the source worktree's).
fn own_unit(
    unit: &Unit,
    src_root: &Path,
    new_root: &Path,
    pkg: &Path,
    start: std::time::SystemTime,
) -> Result<String, String> {
    let fingerprint = unit.from.join(".fingerprint").join(unit.name);
    let json = std::fs::read_dir(&fingerprint)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .ok_or("no fingerprint")?;
    let text = std::fs::read_to_string(&json).map_err(|e| e.to_string())?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("fingerprint: {e}"))?;
    let mut dep_info = None;
    for local in doc.get("local").and_then(|l| l.as_array()).ok_or("fingerprint without `local`")? {
        match local.as_object().and_then(|o| o.iter().next()) {
            Some((kind, check)) if kind == "CheckDepInfo" && dep_info.is_none() => {
                if check.get("checksum").and_then(|c| c.as_bool()) != Some(false) {
                    return Err("checked by checksums".into());
                }
                dep_info = check.get("dep_info").and_then(|d| d.as_str()).map(str::to_string);
            }
            Some((kind, _)) if kind == "RerunIfEnvChanged" => {}
            Some((kind, _)) => return Err(format!("checked by {kind}")),
            None => return Err("fingerprint not understood".into()),
        }
    }
    let dep_info = dep_info.ok_or("no dep-info check")?;
    // `<profile>/.fingerprint/<unit>/dep-…` (`debug/…`, `xtask/…`), relative to the target directory.
    let profile = unit.from.file_name().ok_or("no profile directory")?;
    let file_name = match Path::new(&dep_info).strip_prefix(Path::new(profile).join(".fingerprint").join(unit.name)) {
        Ok(f) if f.components().count() == 1 => f.to_string_lossy().into_owned(),
        _ => return Err(format!("dep-info elsewhere: {dep_info}")),
    };
    let reference =
        std::fs::metadata(fingerprint.join(&file_name)).and_then(|m| m.modified()).map_err(|e| e.to_string())?;

    // rustc's own dep-info: every file read, every environment value compiled in.
    let build_dir = unit.from.join("build").join(unit.name);
    let rustc_d = unit
        .artifacts
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "d"))
        .cloned()
        .chain(
            std::fs::read_dir(&build_dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "d")),
        )
        .collect::<Vec<_>>();
    let [rustc_d] = rustc_d.as_slice() else { return Err(format!("{} dep-info files from rustc", rustc_d.len())) };
    let (files, env) = parse_rustc_dep_info(&std::fs::read_to_string(rustc_d).map_err(|e| e.to_string())?)
        .ok_or("rustc's dep-info not understood")?;
    if let Some((key, _)) = env.iter().find(|(_, v)| v.starts_with('/') || v.contains(&*src_root.to_string_lossy())) {
        return Err(format!("compiled with a path: {key}"));
    }
    let (src_pkg, new_pkg) = (src_root.join(pkg), new_root.join(pkg));
    for file in &files {
        // rustc runs in the workspace root: relative paths are relative to it.
        let src = src_root.join(file).canonicalize().map_err(|e| format!("{file}: {e}"))?;
        let Ok(rel) = src.strip_prefix(&src_pkg) else {
            return Err(format!("reads {file}, outside its package"));
        };
        let fresh = std::fs::metadata(&src).and_then(|m| m.modified()).is_ok_and(|m| m <= reference);
        if !fresh {
            return Err(format!("not fresh here: {file} is newer than its build"));
        }
        let new = new_pkg.join(rel);
        let new_meta = std::fs::symlink_metadata(&new).map_err(|_| format!("{file} is not in the new worktree"))?;
        if !new_meta.is_file() || new_meta.modified().map_or(true, |m| m >= start) {
            return Err(format!("{file} changed in the new worktree"));
        }
        if std::fs::read(&src).ok() != std::fs::read(&new).ok() {
            return Err(format!("{file} differs"));
        }
    }
    Ok(file_name)
}

/// rustc's `--emit=dep-info` file: the files of its first rule (relative to where rustc ran, or
/// absolute; spaces escaped as `\ `) and its `# env-dep:KEY=VALUE` lines.
fn parse_rustc_dep_info(text: &str) -> Option<(Vec<String>, Vec<(String, String)>)> {
    let first = text.lines().next()?;
    // The target is this file's own path, `…/<unit>.d`.
    let (_, deps) = first.split_once(".d: ").or_else(|| first.strip_suffix(".d:").map(|t| (t, "")))?;
    let mut files = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.push(chars.next()?),
            ' ' => {
                if !current.is_empty() {
                    files.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        files.push(current);
    }
    let env = text
        .lines()
        .filter_map(|l| l.strip_prefix("# env-dep:"))
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    Some((files, env))
}

/// Whether rustc rewrites this artifact in place (a hard link to it would be written through):
/// the dep-info file `<crate>-<hash>.d`. Everything else in `deps/` is replaced by rename.
fn written_in_place(file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "d")
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?.flatten() {
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            copy_file(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(link, &target)?;
        }
    }
    Ok(())
}

/// A copy with the source's permissions and modification time (cargo's freshness check compares
/// them), through one descriptor each: creating files is most of a seed's time.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let copy = || -> std::io::Result<()> {
        let mut src = std::fs::File::open(from)?;
        let meta = src.metadata()?;
        let mut dst = std::fs::File::options().write(true).create_new(true).open(to)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.set_permissions(meta.permissions())?;
        dst.set_modified(meta.modified()?)
    };
    copy().with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_split_at_the_hash() {
        assert_eq!(unit_hash("serde_json-0c9538b8be19a9ac"), Some(("serde_json", "0c9538b8be19a9ac")));
        assert_eq!(unit_hash("libserde_json-0c9538b8be19a9ac"), Some(("libserde_json", "0c9538b8be19a9ac")));
        assert_eq!(unit_hash("build-script-build"), None);
        assert_eq!(unit_hash("app"), None);
    }

    #[test]
    fn rustc_s_dep_info_gives_files_and_compiled_in_values() {
        let text = "/w/target/debug/deps/x-0123456789abcdef.d: x/src/main.rs x/src/a\\ b.txt /abs/m.sql\n\n/w/target/debug/deps/x-0123456789abcdef: x/src/main.rs\n\nx/src/main.rs:\n\n# env-dep:CARGO_MANIFEST_DIR=/w/x\n# env-dep:CARGO_PKG_REPOSITORY=\n";
        let (files, env) = parse_rustc_dep_info(text).unwrap();
        assert_eq!(files, ["x/src/main.rs", "x/src/a b.txt", "/abs/m.sql"]);
        assert_eq!(
            env,
            [
                ("CARGO_MANIFEST_DIR".to_string(), "/w/x".to_string()),
                ("CARGO_PKG_REPOSITORY".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn the_workspace_s_own_crates_are_found_with_both_spellings() {
        let dir = std::env::temp_dir().join(format!("xtask-bc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("crates/my-lib")).unwrap();
        std::fs::create_dir_all(dir.join("tools/aws")).unwrap();
        std::fs::write(dir.join("Cargo.toml"), "[workspace]\nmembers = [\"crates/*\"]\nexclude = [\"tools/aws\"]\n")
            .unwrap();
        std::fs::write(
            dir.join("crates/my-lib/Cargo.toml"),
            "[package]\nname = \"my-lib\"\n[[bin]]\nname = \"serve-it\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("tools/aws/Cargo.toml"), "[package]\nname = \"tool-aws\"\n[workspace]\n").unwrap();
        let own = workspace_crates(&dir);
        let names = &own.names;
        for n in ["my-lib", "my_lib", "serve-it", "serve_it", "tool-aws", "tool_aws"] {
            assert!(names.contains(n), "{n} in {names:?}");
        }
        assert!(!names.contains("serde"));
        // Only the root workspace's members can be seeded (rustc runs elsewhere for the others).
        assert_eq!(own.members.get("my-lib"), Some(&PathBuf::from("crates/my-lib")));
        assert_eq!(own.members.len(), 1, "{:?}", own.members);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
