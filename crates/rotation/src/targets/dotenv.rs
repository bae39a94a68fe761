//! The dotenv target, for local development: rewrites one `.env` file atomically
//! The dotenv target, for local development: rewrites one `.env` file atomically
//! (`secret_core::private_file`: an exclusively created temporary file in the same
//! folder, fsync, rename; mode 0600), replacing the lines of the variables it manages
//! and keeping every other line as it was; and reads the file back ([`parse`]) for a
//! drift check, which must understand a file edited by hand as well as ours. A symlink
//! at `.env` is refused: neither read through nor written through.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use async_trait::async_trait;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::{DeploymentId, Live, LiveVariables, Target, Variables};
use crate::http::ExternalError;

pub struct Dotenv {
    path: PathBuf,
}

impl Dotenv {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The file's text (empty when it does not exist), read without following a
    /// symlink at its name (a link planted there would otherwise have its target's
    /// text copied into the `.env`), in a buffer sized once so that no copy of the
    /// values is left behind by a reallocation, wiped on drop.
    fn read(&self) -> std::io::Result<Zeroizing<String>> {
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Zeroizing::new(String::new()))
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(std::io::Error::other(
                    "it is a symlink; a dotenv target writes a regular file, so point `path` \
                     at the file itself",
                ))
            }
            Err(e) => return Err(e),
        };
        let size = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let mut text = Zeroizing::new(String::with_capacity(size + 1));
        file.read_to_string(&mut text)?;
        Ok(text)
    }

    fn rewrite(&self, vars: &Variables) -> std::io::Result<()> {
        // The target names a file in a folder that exists: a mistyped path must fail
        // the push, not create folders nobody asked for.
        if let Some(folder) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !folder.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("the folder {} does not exist", folder.display()),
                ));
            }
        }
        let existing = self.read()?;
        let mut out = Zeroizing::new(String::with_capacity(existing.len() + 256));
        let mut written = std::collections::BTreeSet::new();
        for line in existing.lines() {
            let key = line
                .trim_start()
                .strip_prefix("export ")
                .unwrap_or(line.trim_start())
                .split('=')
                .next()
                .unwrap_or("")
                .trim();
            match vars.get(key) {
                Some(Some(value)) => {
                    out.push_str(&format!("{key}={}\n", quote(value.expose()).as_str()));
                    written.insert(key.to_string());
                }
                Some(None) => {}
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        for (key, value) in vars {
            if let Some(value) = value {
                if !written.contains(key) {
                    out.push_str(&format!("{key}={}\n", quote(value.expose()).as_str()));
                }
            }
        }
        secret_core::private_file::write(&self.path, out.as_bytes(), true)
            .map_err(std::io::Error::other)
    }
}

/// Double-quoted, with the escapes dotenv parsers understand.
fn quote(value: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(value.len() + 2));
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '$' => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where a dotenv file cannot be read, and why: never the text of the line, which may
/// hold a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
}

/// The variables of a dotenv file, as [`quote`] writes them and as people write them
/// by hand: `NAME=value` lines, an optional `export ` prefix, `#` comment lines, blank
/// lines; values unquoted (trimmed, ending at a ` #` comment), in single quotes
/// (literal), or in double quotes (with the escapes `\n \r \t \" \' \\ \$`; any
/// other backslash stays as written). Quoted values may span lines. A name set twice
/// keeps its last value, as a shell sourcing the file would.
pub fn parse(text: &str) -> Result<BTreeMap<String, Zeroizing<String>>, ParseError> {
    let mut vars = BTreeMap::new();
    let mut lines = text.split('\n').enumerate();
    while let Some((index, raw)) = lines.next() {
        let line = index + 1;
        let error = |reason| ParseError { line, reason };
        let trimmed = raw.strip_suffix('\r').unwrap_or(raw).trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(trimmed);
        let Some((name, rest)) = body.split_once('=') else {
            return Err(error("expected NAME=value"));
        };
        let name = name.trim_end();
        if !is_name(name) {
            return Err(error(
                "the name must be letters, digits and _ ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let value = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let mut value = Zeroizing::new(String::with_capacity(rest.len()));
                let mut chunk = &rest[1..];
                let after = loop {
                    if let Some(after) = unquote(chunk, quote, &mut value) {
                        break after;
                    }
                    // No closing quote on this line: the value goes on.
                    let Some((_, next)) = lines.next() else {
                        return Err(error("a quoted value is not closed"));
                    };
                    value.push('\n');
                    chunk = next;
                };
                let after = after.trim_end_matches('\r').trim();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(error("text after a closing quote"));
                }
                value
            }
            _ => {
                let line_text = rest.strip_suffix('\r').unwrap_or(rest);
                let end = comment_start(line_text).unwrap_or(line_text.len());
                Zeroizing::new(line_text[..end].trim_end().to_string())
            }
        };
        vars.insert(name.to_string(), value);
    }
    Ok(vars)
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where an unquoted value's comment starts: a `#` after a space or a tab.
fn comment_start(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (1..bytes.len()).find(|&i| bytes[i] == b'#' && matches!(bytes[i - 1], b' ' | b'\t'))
}

/// Appends the quoted text of `chunk` to `out` up to the closing `quote`, and returns
/// what follows it; `None` when the chunk ends first.
fn unquote<'a>(chunk: &'a str, quote: char, out: &mut String) -> Option<&'a str> {
    let mut chars = chunk.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Some(&chunk[i + c.len_utf8()..]);
        }
        if c == '\\' && quote == '"' {
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e @ ('"' | '\'' | '\\' | '$'))) => out.push(e),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
            continue;
        }
        out.push(c);
    }
    None
}

#[async_trait]
impl Target for Dotenv {
    async fn deliver(&self, vars: &Variables) -> Result<(), ExternalError> {
        self.rewrite(vars).map_err(|e| {
            ExternalError::permanent(
                "dotenv",
                format!("cannot write {}: {e}", self.path.display()),
            )
        })
    }

    async fn latest_deployment(&self) -> Result<Option<DeploymentId>, ExternalError> {
        Ok(None)
    }

    async fn deploy(
        &self,
        _before: Option<&DeploymentId>,
    ) -> Result<Option<DeploymentId>, ExternalError> {
        Ok(None)
    }

    async fn wait_healthy(
        &self,
        _deployment: Option<&DeploymentId>,
        _progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<(), ExternalError> {
        Ok(())
    }

    async fn live(&self, names: &[String]) -> Result<LiveVariables, ExternalError> {
        let cannot = |what: String| {
            ExternalError::permanent(
                "dotenv",
                format!("cannot read {}: {what}", self.path.display()),
            )
        };
        let text = self.read().map_err(|e| cannot(e.to_string()))?;
        let mut all = parse(&text).map_err(|e| cannot(e.to_string()))?;
        Ok(names
            .iter()
            .filter_map(|name| {
                let value = all.remove(name)?;
                Some((
                    name.clone(),
                    Live::Value(SecretString::from(value.as_str())),
                ))
            })
            .collect())
    }

    fn describe(&self) -> String {
        format!("dotenv file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secret_core::model::SecretValue;

    fn value(s: &str) -> Option<SecretValue> {
        Some(SecretValue::from_bytes(Zeroizing::new(s.as_bytes().to_vec()), true).unwrap())
    }

    fn read_back(text: &str) -> BTreeMap<String, String> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    }

    #[test]
    fn what_we_write_reads_back_byte_for_byte() {
        let nasty = [
            "plain",
            "",
            "  spaces at both ends  ",
            "quotes \" and ' inside",
            "dollar $HOME and ${X} and \\$",
            "hash # not a comment #x",
            "a=b=c",
            "back\\slash \\n not a newline \\",
            "line one\nline two\n",
            "tab\there\r\n",
            "unicode: é ü 漢字 🙂",
            "'single-quoted'",
            "\"double-quoted\"",
            "ends with a backslash\\",
        ];
        let mut text = String::new();
        for (i, v) in nasty.iter().enumerate() {
            text.push_str(&format!("V{i}={}\n", quote(v).as_str()));
        }
        let back = read_back(&text);
        for (i, v) in nasty.iter().enumerate() {
            assert_eq!(
                back.get(&format!("V{i}")).map(String::as_str),
                Some(*v),
                "V{i}"
            );
        }
    }

    #[test]
    fn hand_written_files_read_as_people_mean_them() {
        let text = "# comment\n\
                    \n\
                    PLAIN=value # a comment\n\
                    export EXPORTED = spaced  \n\
                    SINGLE='lit\\eral $x \"q\" # kept'\n\
                    DOUBLE=\"a\\tb\\q\" # comment after\n\
                    MULTI=\"first\n\
                    second\"\n\
                    HASH=a#b\n\
                    EMPTY=\n\
                    CRLF=windows\r\n\
                    DUP=first\n\
                    DUP=second\n";
        let back = read_back(text);
        let want = [
            ("PLAIN", "value"),
            ("EXPORTED", "spaced"),
            ("SINGLE", "lit\\eral $x \"q\" # kept"),
            ("DOUBLE", "a\tb\\q"),
            ("MULTI", "first\nsecond"),
            ("HASH", "a#b"),
            ("EMPTY", ""),
            ("CRLF", "windows"),
            ("DUP", "second"),
        ];
        for (k, v) in want {
            assert_eq!(back.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(back.len(), want.len());
    }

    #[test]
    fn a_broken_file_names_the_line_and_never_its_text() {
        for (text, line, reason) in [
            (
                "A=1\nB=\"never closed\nC=3\n",
                2,
                "a quoted value is not closed",
            ),
            ("A=1\njust-a-value-pasted-here\n", 2, "expected NAME=value"),
            ("A='x' trailing-secret\n", 1, "text after a closing quote"),
            (
                "1A=x\n",
                1,
                "the name must be letters, digits and _ ([A-Za-z_][A-Za-z0-9_]*)",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!((err.line, err.reason), (line, reason), "{text:?}");
            let shown = err.to_string();
            assert!(
                !shown.contains("never closed")
                    && !shown.contains("pasted")
                    && !shown.contains("trailing-secret"),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn live_reads_only_the_names_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        let target = Dotenv::new(path.clone());
        let names = vec!["A".to_string(), "B".to_string()];
        assert!(
            target.live(&names).await.unwrap().is_empty(),
            "no file: nothing set"
        );
        std::fs::write(&path, "A=\"x y\"\nOTHER=z\n").unwrap();
        let live = target.live(&names).await.unwrap();
        assert_eq!(live.len(), 1);
        match &live["A"] {
            Live::Value(v) => assert_eq!(secrecy::ExposeSecret::expose_secret(v), "x y"),
            Live::Sealed => panic!("a file has no sealed values"),
        }
        std::fs::write(&path, "A=\"x y\nB=1\n").unwrap();
        let err = target.live(&names).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("line 1: a quoted value is not closed"),
            "{err}"
        );
        assert!(!err.to_string().contains("x y"), "{err}");
    }

    #[tokio::test]
    async fn a_file_in_a_missing_folder_fails_the_push_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-folder/.env");
        let target = Dotenv::new(path.clone());
        let mut vars = Variables::new();
        vars.insert("A".into(), value("a"));
        let err = target.deliver(&vars).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!dir.path().join("no-such-folder").exists());
    }

    #[tokio::test]
    async fn rewrites_managed_lines_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(
            &path,
            "# local\nPORT=8080\nJWT_SECRET=old\nexport OLD_PREV=x\n",
        )
        .unwrap();
        let target = Dotenv::new(path.clone());
        let mut vars = Variables::new();
        vars.insert("JWT_SECRET".into(), value("new \"quoted\" $x"));
        vars.insert("OLD_PREV".into(), None);
        vars.insert("ADDED".into(), value("a"));
        target.deliver(&vars).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# local\nPORT=8080\nJWT_SECRET=\"new \\\"quoted\\\" \\$x\"\nADDED=\"a\"\n"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[tokio::test]
    async fn a_symlink_planted_at_the_old_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "PORT=1\n").unwrap();
        // The name this target used to write through, with create+truncate.
        std::os::unix::fs::symlink(&victim, dir.path().join(".secret-tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("secret-tmp")).unwrap();
        let mut vars = Variables::new();
        vars.insert("JWT_SECRET".into(), value("v"));
        Dotenv::new(path.clone()).deliver(&vars).await.unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "PORT=1\nJWT_SECRET=\"v\"\n"
        );
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[tokio::test]
    async fn a_symlink_at_the_env_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "PRIVATE=key-material\n").unwrap();
        let path = dir.path().join(".env");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut vars = Variables::new();
        vars.insert("JWT_SECRET".into(), value("v"));
        let err = Dotenv::new(path.clone()).deliver(&vars).await.unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "PRIVATE=key-material\n"
        );
        assert_eq!(std::fs::read_link(&path).unwrap(), victim);
    }
}
