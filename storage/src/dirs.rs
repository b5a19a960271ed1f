//! Directories that survive a machine crash: [`create_dir_durable`] creates a directory and
//! every missing ancestor, fsyncing the parent of each one it made, and [`fsync_dir`] fsyncs
//! one directory (after a file in it was created, renamed or removed).
//!
//! What it is not: the atomic replacement of a file (temporary file, fsync, rename, fsync the
//! directory), which each file kind does itself.

use std::fs::File;
use std::path::Path;

/// Fsyncs directory `dir`, so the entries created, renamed or removed in it survive a machine
/// crash.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    tests::record(dir);
    File::open(dir)?.sync_all()
}

/// Creates `dir` and each missing ancestor, and fsyncs the parent of every directory it
/// created (from the outermost), so each new directory survives a machine crash. A directory
/// that exists already is left as it is.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        at = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            // Made meanwhile by someone else, who fsyncs it; fsyncing again is harmless.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fsync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    //! Records which directories this thread fsynced, so tests can check every creation path.
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static FSYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record(dir: &Path) {
        FSYNCED.with(|f| f.borrow_mut().push(dir.to_owned()));
    }

    /// The directories this thread fsynced since the last call, in order.
    pub(crate) fn take_fsynced() -> Vec<PathBuf> {
        FSYNCED.with(|f| std::mem::take(&mut *f.borrow_mut()))
    }

    #[test]
    fn every_created_directory_is_fsynced_in_its_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a").join("b").join("c");
        take_fsynced();
        super::create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        let a = tmp.path().join("a");
        assert_eq!(take_fsynced(), vec![tmp.path().to_owned(), a.clone(), a.join("b")]);
        super::create_dir_durable(&deep).unwrap();
        assert!(take_fsynced().is_empty(), "an existing directory is left as it is");
    }

    #[test]
    fn a_new_log_fsyncs_every_directory_it_creates_in_its_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("data").join("logs");
        let dir = logs.join("x");
        take_fsynced();
        let opts = crate::LogOptions {
            shards: 2,
            segment_bytes: 64 * 1024,
            index_interval_bytes: 1024,
            background: false,
            ..Default::default()
        };
        let (log, w) = crate::Log::open(&dir, opts).unwrap();
        drop((log, w));
        let fsynced = take_fsynced();
        let building = logs.join(".x.creating");
        // Each new directory's parent: data, logs, the log being built and its shards/, and
        // logs again once the finished log was renamed into place.
        for parent in [
            tmp.path().to_owned(),
            tmp.path().join("data"),
            logs.clone(),
            building.clone(),
            building.join("shards"),
        ] {
            assert!(fsynced.contains(&parent), "{} not fsynced: {fsynced:?}", parent.display());
        }
        let last_logs = fsynced.iter().rposition(|p| *p == logs).unwrap();
        assert!(
            fsynced[..last_logs].iter().any(|p| p.starts_with(&building)),
            "logs/ is fsynced after the rename: {fsynced:?}"
        );
        assert!(dir.join("shards/00001").is_dir() && dir.join("recycle").is_dir());
        assert!(!building.exists());
    }
}
