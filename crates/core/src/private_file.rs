//! Files that hold values or the audit trail (exports, `.env` targets, identities),
//! written the one safe way: whole or not at all, readable only by their owner, and
//! never through a path someone else prepared.
//!
//! A predictable temporary name (`FILE.tmp`) opened with create+truncate lets anyone
//! who can write the folder plant a symlink there: the write follows it (overwriting
//! the link's target) and the rename then makes the destination that link. Here the
//! temporary file gets a random name and is created with `O_CREAT|O_EXCL` (an existing
//! name — file, symlink, dangling symlink — is never opened) and mode 0600, by
//! `tempfile`, in the destination's own folder (so the rename is atomic and never
//! crosses filesystems). It is written, fsynced, then renamed over the destination:
//! `rename(2)` replaces a symlink found there, it never writes through one. The folder
//! is fsynced last, so the rename itself survives a power cut. A failure at any point
//! removes the temporary file and leaves the destination as it was.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// What to do when the destination exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (a file or a symlink; never what a symlink points to).
    Replace,
    /// Refuse with `AlreadyExists` and change nothing (new identity files).
    Keep,
}

/// Writes `contents` to `path` as a private file (0600). The folder must exist.
pub fn write(path: &Path, contents: &[u8], existing: Existing) -> io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".secret-")
        .suffix(".tmp")
        .tempfile_in(folder)?;
    // tempfile creates with 0600; say so, rather than rely on it.
    use std::os::unix::fs::PermissionsExt;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))?;
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    match existing {
        Existing::Replace => temp.persist(path).map_err(|e| e.error)?,
        // link(2) then unlink: fails if anything, even a dangling symlink, has the name.
        Existing::Keep => temp.persist_noclobber(path).map_err(|e| e.error)?,
    };
    fs::File::open(folder)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_a_private_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        write(&path, b"one", Existing::Replace).unwrap();
        write(&path, b"two", Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names(dir.path()), ["out.jsonl"]);
    }

    #[test]
    fn symlinks_planted_at_the_old_temporary_names_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("audit.jsonl");
        for planted in ["audit.tmp-secret", "audit.secret-tmp", "audit.jsonl.tmp"] {
            symlink(&victim, dir.path().join(planted)).unwrap();
        }
        write(&path, b"export", Existing::Replace).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"export");
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join(".env");
        symlink(&victim, &path).unwrap();
        write(&path, b"A=1\n", Existing::Replace).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"A=1\n");
    }

    #[test]
    fn keep_refuses_any_existing_name_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let file = dir.path().join("identity.txt");
        fs::write(&file, b"old").unwrap();
        let link = dir.path().join("link.txt");
        symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling.txt");
        symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for path in [&file, &link, &dangling] {
            let err = write(path, b"new", Existing::Keep).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{path:?}");
        }
        assert_eq!(fs::read(&file).unwrap(), b"old");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(
            names(dir.path()),
            ["dangling.txt", "identity.txt", "link.txt", "victim"]
        );
        let fresh = dir.path().join("fresh.txt");
        write(&fresh, b"new", Existing::Keep).unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"new");
    }

    #[test]
    fn a_missing_folder_is_an_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/file");
        assert!(write(&path, b"x", Existing::Replace).is_err());
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }
}
