//! What a database this tool made says about itself: the JSON in its comment, `xtask-db {…}`
//! ([`MARKER_PREFIX`]). The comment lives in the shared catalog, so it is read without connecting
//! to the database (which would make a template's copies stale), and a database without one is
//! never dropped by a cleanup verb.
//!
//! The JSON is `{"kind": …, "created_at": …, …what that kind records}`. Reading is lenient in both
//! directions: a field a newer version added is ignored, a field an older version lacked takes its
//! default, and a marker that is ours but not understood (a kind from a newer version) reads as
//! [`Kind::Other`] — still ours, never mistaken for a stranger's database and never acted on as a
//! kind it is not.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::freshness::FrozenState;

/// Prefix of the comment that marks a database as made by this tool.
pub const MARKER_PREFIX: &str = "xtask-db ";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    #[serde(flatten)]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// Being built by a run of this tool, to become `target`; [`super::staging::sweep_abandoned`]
    /// removes it once that run (`pid` on `host`) is gone.
    Staging {
        #[serde(rename = "for", default)]
        target: String,
        #[serde(default)]
        pid: Option<i64>,
        #[serde(default)]
        host: String,
        /// Set when this is a database that had the name `target` and was renamed aside by the
        /// run that replaced it (see [`super::staging::Old::Replace`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retired: Option<Retired>,
    },
    /// The golden template, built by `db template create`.
    Template {},
    /// A worktree's own database (`db worktree`).
    Branch(Branch),
    /// Every migration on an empty database (`db fresh`).
    Fresh {},
    /// A production dump restored by `db load-clone`.
    ProdClone {
        #[serde(default)]
        dump: PathBuf,
    },
    /// A migrated copy of the production copy, kept by `db rehearse --keep`.
    Rehearsal {
        #[serde(default)]
        from: String,
    },
    /// The frozen copy of the template: what clones copy while the template is in use.
    Frozen(Copy),
    /// The spare clone of the template, ready to be renamed into place.
    Spare(Copy),
    /// Ours, of a kind this version does not know.
    #[serde(other)]
    Other,
}

/// Whose a branch database is: see `db::ops::owner`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Branch {
    #[serde(default)]
    pub branch: String,
    /// The worktree's path when the database was made (or claimed).
    #[serde(default)]
    pub worktree: PathBuf,
    /// The worktree's git id (its directory under `.git/worktrees/`, kept by `git worktree move`).
    #[serde(default)]
    pub worktree_id: Option<String>,
    /// The repository: its main worktree's path.
    #[serde(default)]
    pub repo: PathBuf,
    #[serde(default)]
    pub template: String,
}

/// What a database renamed aside by a replacement had, so that [`super::staging::sweep_abandoned`]
/// can give it its name back if nothing took that name after all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Retired {
    /// Its comment (our marker, or someone else's text) before it was retired.
    #[serde(default)]
    pub comment: Option<String>,
    /// Whether it allowed connections.
    #[serde(default = "yes")]
    pub allow_connections: bool,
}

fn yes() -> bool {
    true
}

/// What a copy of the template records about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Copy {
    #[serde(default)]
    pub template: String,
    /// `None` when the record is missing or from a version that recorded something else: then
    /// the copy is never taken as current.
    #[serde(default, deserialize_with = "lenient")]
    pub state: Option<FrozenState>,
}

fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<FrozenState>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

impl Marker {
    /// A marker of `kind`, made now.
    pub fn new(kind: Kind) -> Marker {
        Marker { kind, created_at: crate::time::now_rfc3339() }
    }

    /// The marker in a database comment, if the comment is one of ours. A comment with our
    /// prefix whose JSON does not read as a marker of this version is [`Kind::Other`].
    pub fn from_comment(comment: &str) -> Option<Marker> {
        let value: serde_json::Value = serde_json::from_str(comment.strip_prefix(MARKER_PREFIX)?).ok()?;
        if !value.is_object() {
            return None;
        }
        Some(serde_json::from_value(value).unwrap_or(Marker { kind: Kind::Other, created_at: String::new() }))
    }

    /// The comment that carries this marker. Fails on what JSON cannot hold (a path that is not
    /// UTF-8): a marker written wrong would make the database a stranger's, or never swept.
    pub fn to_comment(&self) -> anyhow::Result<String> {
        let json = serde_json::to_string(self)
            .map_err(|e| anyhow::anyhow!("recording what this database is: {e} (a path that is not UTF-8?)"))?;
        Ok(format!("{MARKER_PREFIX}{json}"))
    }
}

impl Kind {
    /// The name `db status` and `--format json` show (and the marker's `kind`).
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Staging { .. } => "staging",
            Kind::Template {} => "template",
            Kind::Branch(_) => "branch",
            Kind::Fresh {} => "fresh",
            Kind::ProdClone { .. } => "prod_clone",
            Kind::Rehearsal { .. } => "rehearsal",
            Kind::Frozen(_) => "frozen",
            Kind::Spare(_) => "spare",
            Kind::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Option<Marker> {
        Marker::from_comment(&format!("{MARKER_PREFIX}{json}"))
    }

    #[test]
    fn every_kind_reads_back_as_written() {
        let kinds = [
            Kind::Staging { target: "app_x".into(), pid: Some(42), host: "h".into(), retired: None },
            Kind::Staging {
                target: "app_x".into(),
                pid: Some(42),
                host: "h".into(),
                retired: Some(Retired {
                    comment: Some("xtask-db {\"kind\":\"template\"}".into()),
                    allow_connections: true,
                }),
            },
            Kind::Template {},
            Kind::Branch(Branch { branch: "b".into(), worktree: "/w".into(), ..Branch::default() }),
            Kind::Fresh {},
            Kind::ProdClone { dump: "/d.dump".into() },
            Kind::Rehearsal { from: "app_prod_clone".into() },
            Kind::Frozen(Copy { template: "t".into(), state: None }),
            Kind::Spare(Copy { template: "t".into(), state: None }),
        ];
        for kind in kinds {
            let m = Marker::new(kind);
            let back = Marker::from_comment(&m.to_comment().unwrap()).expect("our own marker reads back");
            assert_eq!(back.kind.name(), m.kind.name());
            assert_eq!(back.created_at, m.created_at);
            assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&m).unwrap());
        }
    }

    #[test]
    fn markers_written_by_earlier_versions_read() {
        // As 0.x wrote them: the kind's fields beside `kind` and `created_at`.
        let m = read(r#"{"kind":"branch","created_at":"t","branch":"feat","worktree":"/r/w","worktree_id":"w","repo":"/r","template":"app"}"#).unwrap();
        let Kind::Branch(b) = m.kind else { panic!("not a branch: {m:?}") };
        assert_eq!((b.branch.as_str(), b.worktree_id.as_deref()), ("feat", Some("w")));
        assert_eq!(b.repo, PathBuf::from("/r"));
        let m = read(r#"{"kind":"staging","for":"app_x","pid":7,"host":"h","created_at":"t"}"#).unwrap();
        assert!(matches!(m.kind, Kind::Staging { pid: Some(7), .. }));
        // Frozen copies were written without `created_at`.
        let m = read(r#"{"kind":"frozen","template":"app","state":{"unexpected":1}}"#).unwrap();
        assert!(matches!(m.kind, Kind::Frozen(Copy { state: None, .. })));
        assert!(matches!(read(r#"{"kind":"fresh","created_at":"t","added_later":[1]}"#).unwrap().kind, Kind::Fresh {}));
        // A frozen copy and a spare recorded by the version before the probe (no `sequences`):
        // still ours and of their kind, but without a record, so never taken as current (that
        // record cannot prove a sequence unchanged).
        let old = r#"{"template":"app","backends":[{"pid":7,"started":"s","state_change":"c","state":"idle","kind":"client backend","app":"psql"}],"counters":null,"unverified":null,"frozen_at":"2026-12-01T00:00:00Z"}"#;
        // And as this version writes them: read with their state.
        let now = r#"{"template":"app","backends":[{"pid":7,"started":"s","state_change":"c","state":"idle","kind":"client backend","app":"psql","xact_start":"","leader":0}],"counters":null,"sequences":{"digest":"d","count":1},"unverified":null,"frozen_at":"2026-12-01T00:00:00Z"}"#;
        for kind in ["frozen", "spare"] {
            let m = read(&format!(r#"{{"kind":"{kind}","template":"app","state":{old}}}"#)).unwrap();
            let (Kind::Frozen(c) | Kind::Spare(c)) = &m.kind else { panic!("{m:?}") };
            assert!(c.state.is_none(), "{m:?}");
            let m = read(&format!(r#"{{"kind":"{kind}","template":"app","state":{now}}}"#)).unwrap();
            let (Kind::Frozen(c) | Kind::Spare(c)) = &m.kind else { panic!("{m:?}") };
            let s = c.state.as_ref().expect("the record is read");
            assert_eq!(
                (s.template.as_str(), s.backends.len(), s.frozen_at.as_str(), s.sequences.count),
                ("app", 1, "2026-12-01T00:00:00Z", 1)
            );
        }
        assert!(matches!(read(r#"{"kind":"template","created_at":"t"}"#).unwrap().kind, Kind::Template {}));
        let m = read(r#"{"kind":"prod_clone","created_at":"t","dump":"/r/dump/prod-1.dump"}"#).unwrap();
        assert!(matches!(m.kind, Kind::ProdClone { ref dump } if dump.ends_with("prod-1.dump")));
    }

    #[test]
    fn ours_but_not_understood_is_other_and_strangers_are_none() {
        assert!(matches!(read(r#"{"kind":"from_the_future"}"#).unwrap().kind, Kind::Other));
        assert!(matches!(read(r#"{"kind":"branch","worktree":7}"#).unwrap().kind, Kind::Other));
        assert!(matches!(read(r#"{"no_kind":1}"#).unwrap().kind, Kind::Other));
        assert!(read("[1]").is_none());
        assert!(read("not json").is_none());
        assert!(Marker::from_comment(r#"someone else's {"kind":"branch"}"#).is_none());
    }
}
