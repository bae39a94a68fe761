//! API token scopes: what a token may do, with globs on secret names.
//!
//! `admin` · `secrets:list` · `secrets:read:<glob>` · `secrets:write:<glob>` ·
//! `secrets:delete:<glob>` · `rotate:<glob>` · `audit:read`. A glob is a secret name in
//! which `*` matches any run of characters and `?` one character (`OPENAI_*`, `*`).
//!
//! Deleting has a scope of its own: a soft delete is undone by `secret undelete`, but
//! until then every reader of the secret fails, so a token that may write a value does
//! not thereby get to take it away from its readers.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    SecretsList,
    SecretsRead(String),
    SecretsWrite(String),
    SecretsDelete(String),
    Rotate(String),
    AuditRead,
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need<'a> {
    List,
    Read(&'a str),
    Write(&'a str),
    Delete(&'a str),
    Rotate(&'a str),
    AuditRead,
    /// Rotation records of one secret (or all): `rotate:<glob>` or `audit:read`.
    Rotations(Option<&'a str>),
}

fn valid_glob(glob: &str) -> bool {
    !glob.is_empty()
        && glob.len() <= 255
        && glob
            .chars()
            .all(|c| c == '_' || c == '*' || c == '?' || c.is_ascii_alphanumeric())
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid scope {s:?}: expected admin, secrets:list, secrets:read:GLOB, \
                 secrets:write:GLOB, secrets:delete:GLOB, rotate:GLOB or audit:read \
                 (GLOB: a name with * and ?)"
            )
        };
        let with_glob = |glob: &str, make: fn(String) -> Scope| {
            if valid_glob(glob) {
                Ok(make(glob.to_string()))
            } else {
                Err(bad())
            }
        };
        match s {
            "admin" => Ok(Scope::Admin),
            "secrets:list" => Ok(Scope::SecretsList),
            "audit:read" => Ok(Scope::AuditRead),
            _ => {
                if let Some(g) = s.strip_prefix("secrets:read:") {
                    with_glob(g, Scope::SecretsRead)
                } else if let Some(g) = s.strip_prefix("secrets:write:") {
                    with_glob(g, Scope::SecretsWrite)
                } else if let Some(g) = s.strip_prefix("secrets:delete:") {
                    with_glob(g, Scope::SecretsDelete)
                } else if let Some(g) = s.strip_prefix("rotate:") {
                    with_glob(g, Scope::Rotate)
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::SecretsList => f.write_str("secrets:list"),
            Scope::SecretsRead(g) => write!(f, "secrets:read:{g}"),
            Scope::SecretsWrite(g) => write!(f, "secrets:write:{g}"),
            Scope::SecretsDelete(g) => write!(f, "secrets:delete:{g}"),
            Scope::Rotate(g) => write!(f, "rotate:{g}"),
            Scope::AuditRead => f.write_str("audit:read"),
        }
    }
}

/// Whether `glob` matches the whole of `name`.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == n[ni]) {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ni));
            gi += 1;
        } else if let Some((sg, sn)) = star {
            gi = sg + 1;
            ni = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

/// Whether any of `scopes` grants `need`.
pub fn allows(scopes: &[Scope], need: Need<'_>) -> bool {
    scopes.iter().any(|s| match (s, need) {
        (Scope::Admin, _) => true,
        (Scope::SecretsList, Need::List) => true,
        (Scope::SecretsRead(g), Need::Read(name)) => glob_matches(g, name),
        (Scope::SecretsWrite(g), Need::Write(name)) => glob_matches(g, name),
        (Scope::SecretsDelete(g), Need::Delete(name)) => glob_matches(g, name),
        (Scope::Rotate(g), Need::Rotate(name)) => glob_matches(g, name),
        (Scope::Rotate(g), Need::Rotations(Some(name))) => glob_matches(g, name),
        (Scope::AuditRead, Need::AuditRead | Need::Rotations(_)) => true,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches("OPENAI_*", "OPENAI_API_KEY"));
        assert!(glob_matches("*", "ANY"));
        assert!(glob_matches("*_KEY", "OPENAI_API_KEY"));
        assert!(glob_matches("A?C", "ABC"));
        assert!(glob_matches("*A*B*", "XXAYYBZZ"));
        assert!(!glob_matches("OPENAI_*", "JWT_SECRET"));
        assert!(!glob_matches("OPENAI", "OPENAI_API_KEY"));
        assert!(!glob_matches("A?C", "AC"));
    }

    #[test]
    fn scopes_parse_strictly_and_round_trip() {
        for s in [
            "admin",
            "secrets:list",
            "secrets:read:OPENAI_*",
            "secrets:write:*",
            "secrets:delete:APP_*",
            "rotate:JWT_SECRET",
            "audit:read",
        ] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "read",
            "secrets:read:",
            "secrets:read:a-b",
            "rotate",
            "audit:write",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_scoped_to_openai_cannot_read_the_jwt_secret() {
        let scopes = vec![Scope::SecretsRead("OPENAI_*".into())];
        assert!(allows(&scopes, Need::Read("OPENAI_API_KEY")));
        assert!(!allows(&scopes, Need::Read("JWT_SECRET")));
        assert!(!allows(&scopes, Need::Write("OPENAI_API_KEY")));
        assert!(!allows(&scopes, Need::List));
        assert!(!allows(&scopes, Need::Delete("OPENAI_API_KEY")));
        assert!(allows(&[Scope::Admin], Need::Write("X")));
        assert!(allows(&[Scope::Admin], Need::Delete("X")));
        let writer = [Scope::SecretsWrite("*".into())];
        assert!(
            !allows(&writer, Need::Delete("X")),
            "writing a value is not deleting the secret"
        );
        assert!(allows(
            &[Scope::SecretsDelete("APP_*".into())],
            Need::Delete("APP_KEY")
        ));
        assert!(allows(&[Scope::AuditRead], Need::Rotations(None)));
        assert!(!allows(
            &[Scope::Rotate("JWT_*".into())],
            Need::Rotations(None)
        ));
    }
}
