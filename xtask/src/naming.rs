//! Database names derived from git branch names.
//!
//! `prefix + sanitized(branch)`: lowercase, everything outside `[a-z0-9_]` becomes `_`, at most
//! 63 bytes (PostgreSQL's limit). Whenever sanitizing lost information (any character changed,
//! uppercase included) or truncated, `_` + 8 hex digits of SHA-256 of the raw branch name are
//! appended, so `feature/a-b` and `feature/a_b` never share a database.

use sha2::{Digest, Sha256};

/// PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1).
pub const MAX_NAME: usize = 63;
const HASH_LEN: usize = 8;

/// Names this tool uses for its own databases; a branch never maps onto one of them.
pub struct Reserved<'a> {
    pub prefix: &'a str,
    pub names: &'a [&'a str],
}

/// What a staging database is being built as: the suffix of its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staging {
    /// A branch database, a template, a loaded production copy.
    Build,
    /// A fresh build (`db fresh`).
    Fresh,
    /// The frozen copy of a template.
    Frozen,
    /// The spare clone.
    Spare,
    /// A template retired by a rebuild, until it is dropped.
    Retired,
    /// The copy `db rehearse` migrates.
    Rehearsal,
}

impl Staging {
    const ALL: [Staging; 6] =
        [Staging::Build, Staging::Fresh, Staging::Frozen, Staging::Spare, Staging::Retired, Staging::Rehearsal];
    fn suffix(self) -> &'static str {
        match self {
            Staging::Build => "",
            Staging::Fresh => "_n",
            Staging::Frozen => "_f",
            Staging::Spare => "_s",
            Staging::Retired => "_o",
            Staging::Rehearsal => "_r",
        }
    }
}

/// The temporary name a database is built under: `<prefix>tmp_<host>_<pid><suffix>`, where
/// `<host>` is a short tag of the machine. Name and pid let a later run on the same machine
/// recognise leftovers of a run that was killed outright (SIGKILL, power loss), even if it died
/// before it could mark the database.
pub fn staging_name(prefix: &str, host: &str, pid: u32, what: Staging) -> String {
    format!("{prefix}tmp_{host}_{pid}{}", what.suffix())
}

/// The pid in a staging name made on the machine tagged `host` (see [`staging_name`]).
pub fn staging_pid(prefix: &str, host: &str, name: &str) -> Option<i64> {
    let rest = name.strip_prefix(prefix)?.strip_prefix("tmp_")?.strip_prefix(host)?.strip_prefix('_')?;
    let digits = Staging::ALL
        .iter()
        .filter(|s| **s != Staging::Build)
        .find_map(|s| rest.strip_suffix(s.suffix()))
        .unwrap_or(rest);
    digits.parse().ok()
}

/// The database name for `branch`.
pub fn branch_database(branch: &str, reserved: &Reserved) -> String {
    let prefix = reserved.prefix;
    let sanitized: String = branch
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' { c } else { '_' })
        .collect();
    let room = MAX_NAME.saturating_sub(prefix.len());
    let plain = format!("{prefix}{sanitized}");
    let internal = |name: &str| {
        reserved.names.contains(&name)
            || ["tmp_", "old_", "frozen_", "spare_", "fresh_"]
                .iter()
                .any(|p| name.strip_prefix(prefix).and_then(|n| n.strip_prefix(p)).is_some())
    };
    if sanitized == branch && sanitized.len() <= room && !sanitized.is_empty() && !internal(&plain) {
        return plain;
    }
    let hash = short_hash(branch);
    let keep = room.saturating_sub(1 + HASH_LEN);
    // `sanitized` is ASCII, so any byte index is a char boundary.
    let body = &sanitized[..sanitized.len().min(keep)];
    format!("{prefix}{body}_{hash}")
}

/// First 8 hex digits of SHA-256.
pub fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().take(HASH_LEN / 2).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_carry_host_and_pid() {
        for what in Staging::ALL {
            let name = staging_name("app_", "ab12", 4242, what);
            assert_eq!(staging_pid("app_", "ab12", &name), Some(4242), "{name}");
            assert_eq!(staging_pid("app_", "cd34", &name), None, "another machine's: {name}");
        }
        assert_eq!(staging_name("app_", "ab12", 7, Staging::Fresh), "app_tmp_ab12_7_n");
        assert_eq!(staging_pid("app_", "ab12", "app_tmp_zzzz_12"), None);
        assert_eq!(staging_pid("app_", "ab12", "app_feature"), None);
    }

    fn name(branch: &str) -> String {
        branch_database(branch, &Reserved { prefix: "app_", names: &["app_template", "app_fresh", "app_prod_clone"] })
    }

    #[test]
    fn plain_names_are_kept() {
        assert_eq!(name("main"), "app_main");
        assert_eq!(name("fix_123"), "app_fix_123");
    }

    #[test]
    fn lossy_names_get_a_hash() {
        let a = name("feature/a-b");
        let b = name("feature/a_b");
        assert!(a.starts_with("app_feature_a_b_") && a.len() == "app_feature_a_b_".len() + 8, "{a}");
        assert!(b.starts_with("app_feature_a_b_"), "{b}");
        assert_ne!(a, b);
        assert_eq!(name("feature_a_b"), "app_feature_a_b");
        assert_ne!(name("Feature"), name("feature"));
        assert!(name("Feature").starts_with("app_feature_"));
    }

    #[test]
    fn odd_names_become_valid_identifiers() {
        for branch in
            ["release/1.2.3", "ÜBER-straße", "日本語", "it's \"quoted\"", "x; DROP DATABASE y; --", "a b", ".", "-", ""]
        {
            let n = name(branch);
            assert!(n.len() <= MAX_NAME, "{n}");
            assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{n}");
            assert!(n.len() > "app_".len() + 8, "{branch:?} → {n}");
        }
    }

    #[test]
    fn long_names_are_truncated_with_a_hash() {
        let long = "a".repeat(100);
        let n = name(&long);
        assert_eq!(n.len(), MAX_NAME);
        assert_ne!(n, name(&"a".repeat(101)));
        let exactly = "b".repeat(MAX_NAME - 4);
        assert_eq!(name(&exactly), format!("app_{exactly}"));
        assert_ne!(name(&format!("{exactly}b")).len(), 0);
    }

    #[test]
    fn internal_names_are_never_produced() {
        assert_ne!(name("template"), "app_template");
        assert_ne!(name("fresh"), "app_fresh");
        assert_ne!(name("prod_clone"), "app_prod_clone");
        assert!(name("tmp_123").starts_with("app_tmp_123_"));
        assert!(name("frozen_x").len() > "app_frozen_x".len());
    }
}
