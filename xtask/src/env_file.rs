//! `.env` files, edited the way a person would: change one value and keep every other byte —
//! comments, blank lines, order, `export` prefixes, each value's quoting style and each line's
//! ending (LF or CRLF). A symlinked file is written through the link, a read-only one not at all.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::fail;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

#[derive(Clone, Debug)]
struct Entry {
    key: String,
    value: String,
    quote: Quote,
    /// Byte range of the value as written (quotes included) within the line.
    span: (usize, usize),
}

#[derive(Clone, Debug)]
struct Line {
    /// The line without its ending.
    raw: String,
    /// `"\n"`, `"\r\n"`, or `""` for a last line without one.
    ending: &'static str,
    entry: Option<Entry>,
}

/// A parsed `.env` file.
#[derive(Clone, Debug)]
pub struct EnvFile {
    /// Where it is saved.
    path: PathBuf,
    /// Where its contents were read from, for messages (differs for a [`EnvFile::copy_to`]).
    origin: PathBuf,
    lines: Vec<Line>,
}

impl EnvFile {
    /// Reads `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<EnvFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        EnvFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<EnvFile> {
        let mut lines = Vec::new();
        for (i, chunk) in text.split_inclusive('\n').enumerate() {
            let (raw, ending) = match chunk.strip_suffix("\r\n") {
                Some(raw) => (raw, "\r\n"),
                None => chunk.strip_suffix('\n').map_or((chunk, ""), |raw| (raw, "\n")),
            };
            let entry = parse_line(raw).map_err(|why| {
                fail(
                    format!("malformed {} line {}: {why}", path.display(), i + 1),
                    "fix that line (KEY=value, KEY=\"value\" or KEY='value'; # starts a comment)",
                )
            })?;
            lines.push(Line { raw: raw.to_string(), ending, entry });
        }
        Ok(EnvFile { path: path.to_path_buf(), origin: path.to_path_buf(), lines })
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// The value of `key`. Assigned more than once with different values, it is an error: the
    /// app (dotenvy: the first assignment wins) and a shell sourcing the file (the last wins)
    /// would use different values — for `DATABASE_URL`, different databases.
    pub fn get(&self, key: &str) -> Result<Option<&str>> {
        let found: Vec<(usize, &Entry)> = (self.lines.iter().enumerate())
            .filter_map(|(i, l)| l.entry.as_ref().filter(|e| e.key == key).map(|e| (i, e)))
            .collect();
        let Some((_, first)) = found.first() else { return Ok(None) };
        if found.iter().all(|(_, e)| e.value == first.value) {
            return Ok(Some(first.value.as_str()));
        }
        let lines = found.iter().map(|(i, _)| (i + 1).to_string()).collect::<Vec<_>>().join(", ");
        Err(fail(
            format!(
                "{} assigns {key} {} times with different values (lines {lines}): the app reads the first, a shell the last",
                self.origin.display(),
                found.len()
            ),
            format!("keep one {key} line in {} and delete the others", self.origin.display()),
        ))
    }

    /// All keys with their values, in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| l.entry.as_ref()).map(|e| (e.key.as_str(), e.value.as_str()))
    }

    /// Sets `key`: rewrites the value of every assignment in place (each in its quoting style,
    /// when the value can be written in it), so that all agree; or appends `KEY=value` at the end.
    pub fn set(&mut self, key: &str, value: &str) {
        let mut found = false;
        for line in &mut self.lines {
            let Some(entry) = line.entry.as_mut().filter(|e| e.key == key) else { continue };
            let written = render(value, entry.quote);
            let (start, end) = entry.span;
            line.raw.replace_range(start..end, &written);
            entry.span = (start, start + written.len());
            entry.value = value.to_string();
            found = true;
        }
        if !found {
            let written = render(value, Quote::None);
            let raw = format!("{key}={written}");
            let span = (key.len() + 1, raw.len());
            // The new line ends as the file did (with or without a newline); the line before it
            // gets the file's usual ending if it had none.
            let usual = self.usual_ending();
            let ending = match self.lines.last_mut() {
                Some(last) => {
                    let ending = last.ending;
                    if ending.is_empty() {
                        last.ending = usual;
                    }
                    ending
                }
                None => usual,
            };
            self.lines.push(Line {
                raw,
                ending,
                entry: Some(Entry { key: key.to_string(), value: value.to_string(), quote: Quote::None, span }),
            });
        }
    }

    /// The same contents, to be saved at `path` (a worktree's `.env` made from the main
    /// worktree's); errors about the contents still name the file they were read from.
    pub fn copy_to(&self, path: &Path) -> EnvFile {
        EnvFile { path: path.to_path_buf(), origin: self.origin.clone(), ..self.clone() }
    }

    /// The ending most lines have: CRLF when they outnumber LF, else LF.
    fn usual_ending(&self) -> &'static str {
        let crlf = self.lines.iter().filter(|l| l.ending == "\r\n").count();
        let lf = self.lines.iter().filter(|l| l.ending == "\n").count();
        if crlf > lf {
            "\r\n"
        } else {
            "\n"
        }
    }

    pub fn render(&self) -> String {
        self.lines.iter().flat_map(|l| [l.raw.as_str(), l.ending]).collect()
    }

    /// Fails unless [`EnvFile::save`] may replace the file: one without any write permission bit
    /// was made read-only on purpose. The bits are checked, not `access(2)`: as root (containers,
    /// CI) the OS would let us write anyway.
    pub fn check_writable(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let target = write_target(&self.path)?;
        let Ok(meta) = std::fs::metadata(&target) else { return Ok(()) };
        if meta.permissions().mode() & 0o222 != 0 {
            return Ok(());
        }
        let link = if target == self.path { String::new() } else { format!(" (a link to {})", target.display()) };
        Err(fail(
            format!("{}{link} is read-only: not rewriting it", self.path.display()),
            format!("make it writable (`chmod u+w {}`) and run again", target.display()),
        ))
    }

    /// Writes the file atomically: a temp file next to it, renamed onto it (no fsync: losing the
    /// very last edit in a power cut is harmless, a torn file is not, and rename gives that). A
    /// symlink is written through: the file it leads to is replaced, the link stays. An existing
    /// file keeps its permissions; a new one is 0600, as it holds credentials.
    pub fn save(&self) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        self.check_writable()?;
        let target = write_target(&self.path)?;
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target.file_name().map_or(".env".into(), |n| n.to_string_lossy());
        let tmp = dir.join(format!(".{}.tmp.{}", name.trim_start_matches('.'), std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            if let Ok(meta) = std::fs::metadata(&target) {
                f.set_permissions(meta.permissions())?;
            }
            std::io::Write::write_all(&mut f, self.render().as_bytes())?;
            std::fs::rename(&tmp, &target)
        };
        write()
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
            .with_context(|| format!("writing {}", target.display()))
    }
}

/// The file that writing `path` must replace: the end of its chain of symlinks (each relative
/// target taken from its link's directory, as the OS does), or `path` itself.
fn write_target(path: &Path) -> Result<PathBuf> {
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&target) {
            Ok(next) => target = target.parent().unwrap_or(Path::new("")).join(next),
            // Not a link (EINVAL), or nothing there yet.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::NotFound) => {
                return Ok(target)
            }
            Err(e) => return Err(e).with_context(|| format!("reading the link {}", target.display())),
        }
    }
    Err(fail(format!("{} is a loop of symlinks", path.display()), "point it at a file"))
}

fn parse_line(raw: &str) -> std::result::Result<Option<Entry>, String> {
    let trimmed = raw.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let indent = raw.len() - trimmed.len();
    let (body, body_at) = match trimmed.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => {
            let r = rest.trim_start();
            (r, raw.len() - r.len())
        }
        _ => (trimmed, indent),
    };
    let eq = body.find('=').ok_or("expected KEY=VALUE")?;
    let key = body[..eq].trim_end();
    let valid_key = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid_key {
        return Err(format!("`{key}` is not a valid variable name"));
    }
    let after_eq = body_at + eq + 1;
    let rest = &raw[after_eq..];
    let lead = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    let vstart = after_eq + lead;
    let v = &raw[vstart..];
    let (value, quote, vlen) = match v.chars().next() {
        Some(q @ ('\'' | '"')) => {
            let quote = if q == '\'' { Quote::Single } else { Quote::Double };
            let mut value = String::new();
            let mut chars = v.char_indices().skip(1);
            let mut close = None;
            while let Some((i, c)) = chars.next() {
                if c == q {
                    close = Some(i);
                    break;
                }
                if c == '\\' && quote == Quote::Double {
                    match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, 't')) => value.push('\t'),
                        Some((_, e)) => value.push(e),
                        None => break,
                    }
                } else {
                    value.push(c);
                }
            }
            let close = close.ok_or("the quoted value is not closed (multi-line values are not supported)")?;
            let after = v[close + 1..].trim_start();
            if !(after.is_empty() || after.starts_with('#')) {
                return Err("unexpected text after the closing quote".into());
            }
            (value, quote, close + 1)
        }
        _ => {
            // Unquoted: up to an inline ` #comment`, trailing blanks trimmed.
            let end = v.find(" #").or_else(|| v.find("\t#")).unwrap_or(v.len());
            let value = v[..end].trim_end();
            (value.to_string(), Quote::None, value.len())
        }
    };
    Ok(Some(Entry { key: key.to_string(), value, quote, span: (vstart, vstart + vlen) }))
}

fn render(value: &str, style: Quote) -> String {
    let plain_ok = !value.is_empty()
        && !value.contains(|c: char| c.is_whitespace() || matches!(c, '#' | '"' | '\'' | '\\' | '$' | '`'));
    match style {
        Quote::None if plain_ok => value.to_string(),
        Quote::Single if !value.contains(['\'', '\n']) => format!("'{value}'"),
        _ => {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("\"{escaped}\"")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> EnvFile {
        EnvFile::parse(Path::new(".env"), text).unwrap()
    }

    #[test]
    fn rewrite_keeps_everything_else() {
        let text = "# app settings\nexport APP_HOST=https://me.ngrok.app # my tunnel\n\nDATABASE_URL=\"postgres://u@h/old\" # main db\nPORT=3000\nEMPTY=\n";
        let mut env = parse(text);
        env.set("DATABASE_URL", "postgres://u@h/new");
        env.set("PORT", "3001");
        assert_eq!(
            env.render(),
            "# app settings\nexport APP_HOST=https://me.ngrok.app # my tunnel\n\nDATABASE_URL=\"postgres://u@h/new\" # main db\nPORT=3001\nEMPTY=\n"
        );
        assert_eq!(env.get("APP_HOST").unwrap(), Some("https://me.ngrok.app"));
        assert_eq!(env.get("EMPTY").unwrap(), Some(""));
    }

    #[test]
    fn quoting_styles_are_kept_or_upgraded() {
        let mut env = parse("A='x'\nB=y\nC=\"z\"\n");
        env.set("A", "has space");
        env.set("B", "needs \"quotes\" #");
        env.set("C", "back\\slash");
        assert_eq!(env.render(), "A='has space'\nB=\"needs \\\"quotes\\\" #\"\nC=\"back\\\\slash\"\n");
        let again = parse(&env.render());
        assert_eq!(again.get("B").unwrap(), Some("needs \"quotes\" #"));
        assert_eq!(again.get("C").unwrap(), Some("back\\slash"));
    }

    #[test]
    fn appends_missing_key() {
        let mut env = parse("PORT=1");
        env.set("DATABASE_URL", "postgres://h/d");
        assert_eq!(env.render(), "PORT=1\nDATABASE_URL=postgres://h/d");
    }

    #[test]
    fn set_rewrites_every_assignment() {
        let mut env = parse("PORT=1\nX=y\nexport PORT='1' # again\n");
        assert_eq!(env.get("PORT").unwrap(), Some("1"), "the same value twice is no conflict");
        env.set("PORT", "3");
        assert_eq!(env.render(), "PORT=3\nX=y\nexport PORT='3' # again\n");
        assert_eq!(env.get("PORT").unwrap(), Some("3"));
    }

    #[test]
    fn different_values_for_one_key_are_an_error() {
        // dotenvy (the app) takes the first, a shell sourcing the file the last: nobody can tell
        // which database is meant.
        let env = parse("DATABASE_URL=postgres://h/template\nA=1\nDATABASE_URL=postgres://h/branch\nDATABASE_URL=postgres://h/branch\n");
        let err = crate::error::report(&env.get("DATABASE_URL").unwrap_err()).line;
        assert!(err.contains(".env assigns DATABASE_URL 3 times with different values (lines 1, 3, 4)"), "{err}");
        assert!(err.contains("keep one"), "{err}");
        assert!(!err.contains("postgres://"), "values may hold passwords: {err}");
        assert_eq!(env.get("A").unwrap(), Some("1"));
        assert_eq!(env.get("MISSING").unwrap(), None);
    }

    #[test]
    fn line_endings_are_kept_line_by_line() {
        // Mostly CRLF (one LF line among them): each line keeps its own; an appended line takes the
        // dominant one, and so does a last line that had none.
        let mut env = parse("A=1\r\nB=2\nC=3\r\n");
        assert_eq!(env.get("A").unwrap(), Some("1"));
        env.set("A", "9");
        env.set("D", "4");
        assert_eq!(env.render(), "A=9\r\nB=2\nC=3\r\nD=4\r\n");
        let mut env = parse("A=1\r\nB='2'");
        env.set("B", "x");
        env.set("C", "y");
        assert_eq!(env.render(), "A=1\r\nB='x'\r\nC=y");
        let mut env = parse("");
        env.set("A", "1");
        assert_eq!(env.render(), "A=1\n");
    }

    /// A directory of its own under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("xtask-envfile-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn names(&self, sub: &str) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.0.join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_symlinked_env_is_written_through_the_link() {
        let tmp = TempDir::new("link");
        std::fs::create_dir_all(tmp.0.join("wt")).unwrap();
        std::fs::create_dir_all(tmp.0.join("shared")).unwrap();
        std::fs::write(tmp.0.join("shared/dev.env"), "# shared\r\nPORT=1\r\n").unwrap();
        let link = tmp.0.join("wt/.env");
        std::os::unix::fs::symlink("../shared/dev.env", &link).unwrap();
        let mut env = EnvFile::load(&link).unwrap();
        env.set("PORT", "2");
        env.save().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../shared/dev.env"));
        assert_eq!(std::fs::read_to_string(tmp.0.join("shared/dev.env")).unwrap(), "# shared\r\nPORT=2\r\n");
        assert_eq!(tmp.names("wt"), [".env"], "no temp file left");
        assert_eq!(tmp.names("shared"), ["dev.env"], "no temp file left");
    }

    #[test]
    fn a_read_only_env_is_not_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = TempDir::new("ro");
        let path = tmp.0.join(".env");
        std::fs::write(&path, "PORT=1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let mut env = EnvFile::load(&path).unwrap();
        env.set("PORT", "2");
        // Checked on the mode bits: as root, the OS would let us write anyway.
        for err in [env.check_writable().unwrap_err(), env.save().unwrap_err()] {
            let line = crate::error::report(&err).line;
            assert!(line.contains(&format!("{} is read-only", path.display())), "{line}");
            assert!(line.contains("chmod u+w"), "{line}");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "PORT=1\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o444);
        // Through a link, the target's mode counts (a link's own is always 0777).
        let link = tmp.0.join("link.env");
        std::os::unix::fs::symlink(".env", &link).unwrap();
        let err = EnvFile::load(&link).unwrap().save().unwrap_err();
        assert!(format!("{err:#}").contains("is read-only"), "{err:#}");
        assert_eq!(tmp.names(""), [".env", "link.env"]);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for (text, why) in [
            ("A=1\nnot an assignment\n", "line 2: expected KEY=VALUE"),
            ("1A=x", "line 1: `1A` is not a valid variable name"),
            ("A=\"open", "line 1: the quoted value is not closed"),
            ("A='x' y", "line 1: unexpected text after the closing quote"),
        ] {
            let err = EnvFile::parse(Path::new(".env"), text).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
