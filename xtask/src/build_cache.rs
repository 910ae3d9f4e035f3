//! Seeding a new worktree's `target/` from the worktree the xtask runs in, so that its first
//! `cargo build` compiles only the workspace's own crates instead of every dependency.
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
//! are kept: cargo's freshness check compares them. Incremental caches and the workspace's own
//! crates are left out; cargo builds those in the new worktree.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::db::Ctx;
use crate::time;

/// Seeds `new`'s (a new worktree's) `target/` from `from`'s, the worktree the command runs in:
/// in the background, holding cargo's own lock on the new build directory, so that a `cargo
/// build` started there meanwhile waits for it ("Blocking waiting for file lock on build
/// directory") instead of racing it. Returns the line for the report, if any.
pub fn seed(from: &Ctx, new: &Ctx) -> Result<Option<String>> {
    if !new.config.seed_build_cache {
        return Ok(None);
    }
    if std::env::var_os("CARGO_TARGET_DIR").is_some() || std::env::var_os("CARGO_BUILD_TARGET_DIR").is_some() {
        return Ok(Some("CARGO_TARGET_DIR is set: every worktree builds there (not seeded)".into()));
    }
    if configures_target_dir(&new.config.root) || configures_target_dir(&from.config.root) {
        return Ok(Some("a .cargo/config.toml sets target-dir: not seeded".into()));
    }
    let source = from.config.root.join("target").join(PROFILE);
    let to = new.config.root.join("target");
    if !source.join(".fingerprint").is_dir() {
        return Ok(Some(format!("nothing built in {} yet: not seeded", source.display())));
    }
    if same_file(&source, &to.join(PROFILE)) {
        return Ok(None);
    }
    if to.exists() {
        return Ok(Some(format!("{} exists: left as it is", to.display())));
    }
    std::fs::create_dir_all(to.join(PROFILE)).with_context(|| format!("creating {}", to.display()))?;
    let lock = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(to.join(PROFILE).join(".cargo-lock"))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(Some(format!("{} is being built already: not seeded", to.display())));
    }
    match spawn_seeder(new, &source, &to.join(PROFILE), &lock) {
        Ok(()) => Ok(Some(format!(
            "target/ is being seeded from {} in the background (a `cargo build` there waits for it, a second or two): its first build compiles only this workspace's crates",
            source.display()
        ))),
        // Could not start it: do it here.
        Err(_) => {
            let start = Instant::now();
            let stats = copy_profile(&source, &to.join(PROFILE), &workspace_crates(&new.config.root))?;
            Ok(Some(format!(
                "target/ seeded from {} ({} built dependencies, {} files hard-linked) in {}",
                source.display(),
                stats.units,
                stats.linked,
                time::elapsed(start.elapsed())
            )))
        }
    }
}

/// The profile seeded: the one `cargo build` and `cargo run` use.
const PROFILE: &str = "debug";

/// Starts `db seed-build-cache FROM TO` detached (its own session), with `lock` — cargo's lock
/// on TO, held — as its descriptor 3: the lock is released when it exits, whatever ends it.
fn spawn_seeder(new: &Ctx, from: &Path, to: &Path, lock: &std::fs::File) -> Result<()> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["db", "seed-build-cache"]).arg(from).arg(to).current_dir(&new.config.root);
    let log = new.state_dir().join("seed-build-cache.log");
    crate::proc::spawn_detached(&mut cmd, &log, Some(std::os::fd::AsRawFd::as_raw_fd(lock)))
}

/// `db seed-build-cache FROM TO` (hidden; started by [`seed`]): seeds TO, a profile directory,
/// from FROM. Run in the new worktree, which names the workspace's own crates.
pub fn seed_into(from: &Path, to: &Path) -> Result<()> {
    let root = crate::config::find_workspace_root(&std::env::current_dir()?)?;
    let start = Instant::now();
    let stats = copy_profile(from, to, &workspace_crates(&root))?;
    eprintln!(
        "{}: {} seeded from {} ({} built dependencies, {} files hard-linked) in {}",
        time::now_rfc3339(),
        to.display(),
        from.display(),
        stats.units,
        stats.linked,
        time::elapsed(start.elapsed())
    );
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

/// Names under which the crates built from this repository's sources appear in `target/`: the
/// packages of the workspace's members and of the workspaces it excludes (e.g. `xtask/aws`),
/// with `-` and `_` both, and their `[lib]` and `[[bin]]` names.
fn workspace_crates(root: &Path) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut manifests = vec![root.join("Cargo.toml")];
    let mut seen = HashSet::new();
    while let Some(manifest) = manifests.pop() {
        if !seen.insert(manifest.clone()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let Ok(doc) = text.parse::<toml::Table>() else { continue };
        let dir = manifest.parent().unwrap_or(root).to_path_buf();
        let table_name =
            |v: Option<&toml::Value>| v.and_then(|t| t.get("name")).and_then(|n| n.as_str()).map(str::to_string);
        names.extend(table_name(doc.get("package")));
        names.extend(table_name(doc.get("lib")));
        for bin in doc.get("bin").and_then(|b| b.as_array()).into_iter().flatten() {
            names.extend(table_name(Some(bin)));
        }
        let Some(ws) = doc.get("workspace") else { continue };
        for key in ["members", "exclude"] {
            for pattern in ws.get(key).and_then(|m| m.as_array()).into_iter().flatten().filter_map(|m| m.as_str()) {
                for member in expand(&dir, pattern) {
                    manifests.push(member.join("Cargo.toml"));
                }
            }
        }
    }
    let underscored: Vec<String> = names.iter().map(|n| n.replace('-', "_")).collect();
    names.extend(underscored);
    names
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
    linked: usize,
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
fn copy_profile(from: &Path, to: &Path, own: &HashSet<String>) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut artifacts: std::collections::HashMap<String, Vec<PathBuf>> = std::collections::HashMap::new();
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
    for entry in std::fs::read_dir(from.join(".fingerprint")).context("reading the build's fingerprints")?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((crate_name, hash)) = unit_hash(&name) else { continue };
        if own.contains(crate_name) || to.join(".fingerprint").join(&name).exists() {
            continue;
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
        let build = from.join("build").join(&name);
        if build.is_dir() && !to.join("build").join(&name).exists() {
            copy_tree(&build, &to.join("build").join(&name))?;
        }
        let partial = to.join(".fingerprint").join(format!("{name}.seeding"));
        let _ = std::fs::remove_dir_all(&partial);
        copy_tree(&entry.path(), &partial)?;
        std::fs::rename(&partial, to.join(".fingerprint").join(&name))?;
        stats.units += 1;
    }
    Ok(stats)
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

/// A copy with the source's modification time (cargo's freshness check compares them).
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    let modified = std::fs::metadata(from)?.modified()?;
    std::fs::File::options().write(true).open(to)?.set_modified(modified)?;
    Ok(())
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
        let names = workspace_crates(&dir);
        for n in ["my-lib", "my_lib", "serve-it", "serve_it", "tool-aws", "tool_aws"] {
            assert!(names.contains(n), "{n} in {names:?}");
        }
        assert!(!names.contains("serde"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
