//! The dotenv target, for local development: rewrites one `.env` file atomically
//! (`secret_core::private_file`: an exclusively created temporary file in the same
//! folder, fsync, rename; mode 0600), replacing the lines of the variables it manages
//! and keeping every other line as it was. A symlink at `.env` is refused: neither
//! read through nor written through.

use std::path::PathBuf;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::{DeploymentId, Target, Variables};
use crate::http::ExternalError;

pub struct Dotenv {
    path: PathBuf,
}

impl Dotenv {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The file as it is, read without following a symlink at its name: a link
    /// planted there would otherwise have its target's text copied into the `.env`.
    fn read_existing(&self) -> std::io::Result<Zeroizing<String>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut text = Zeroizing::new(String::new());
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
        {
            Ok(mut file) => {
                file.read_to_string(&mut text)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(std::io::Error::other(
                    "it is a symlink; a dotenv target writes a regular file, so point `path` \
                     at the file itself",
                ))
            }
            Err(e) => return Err(e),
        }
        Ok(text)
    }

    fn rewrite(&self, vars: &Variables) -> std::io::Result<()> {
        let existing = self.read_existing()?;
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
        secret_core::private_file::write(
            &self.path,
            out.as_bytes(),
            secret_core::private_file::Existing::Replace,
        )
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
