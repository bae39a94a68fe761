//! The dotenv target, for local development: rewrites one `.env` file atomically
//! (temp file, fsync, rename; mode 0600), replacing the lines of the variables it
//! manages and keeping every other line as it was.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

    fn rewrite(&self, vars: &Variables) -> std::io::Result<()> {
        let existing = Zeroizing::new(match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        });
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
        let tmp = self.path.with_extension("secret-tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(out.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
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
}
