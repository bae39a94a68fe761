//! Files only their owner can read — backups, a vault kept aside by a restore —
//! written through a temporary file created exclusively (`O_EXCL`, mode 0600, so no
//! symlink is followed and nobody else can have it open) in the destination's folder,
//! fsynced, then renamed into place. A reader never sees half a file, and a crash
//! leaves the whole file or none. Folders it creates are 0700.
//!
//! No crypto and no SQL here: callers hand it the finished bytes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The folder a file goes into (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `dir` and its missing parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), PrivateFileError> {
    if dir.exists() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PrivateFileError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `contents` to `path` (mode 0600). With `overwrite` false an existing file
/// (or symlink) at `path` is refused, even one that appears while writing.
pub fn write(path: &Path, contents: &[u8], overwrite: bool) -> Result<(), PrivateFileError> {
    let io = |source| PrivateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = folder_of(path);
    create_private_dir(&dir)?;
    if !overwrite && path.symlink_metadata().is_ok() {
        return Err(PrivateFileError::Exists(path.to_path_buf()));
    }
    let mut temp = tempfile::Builder::new()
        .prefix(".secret-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(io)?;
    temp.write_all(contents).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    let persisted = if overwrite {
        temp.persist(path)
    } else {
        temp.persist_noclobber(path)
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            PrivateFileError::Exists(path.to_path_buf())
        } else {
            io(e.error)
        }
    })?;
    // The rename itself is durable once the folder is synced.
    if let Ok(folder) = fs::File::open(&dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_whole_and_never_clobbered_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/folder/backup.age");
        write(&path, b"one", false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert!(matches!(
            write(&path, b"two", false),
            Err(PrivateFileError::Exists(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write(&path, b"two", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        // A symlink planted at the destination is refused, and its target untouched.
        let target = dir.path().join("target");
        fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.age");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            write(&link, b"x", false),
            Err(PrivateFileError::Exists(_))
        ));
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        // No temporary file is left behind.
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn symlinks_planted_at_predictable_temporary_names_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("audit.jsonl");
        for planted in ["audit.tmp-secret", "audit.secret-tmp", "audit.jsonl.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.path().join(planted)).unwrap();
        }
        write(&path, b"export", true).unwrap();
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
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write(&path, b"A=1\n", true).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"A=1\n");
    }
}
