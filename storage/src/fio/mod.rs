//! The file layer: every write, fdatasync, preallocation and rename of the storage crate's
//! files goes through here, so that a test can make any of them fail.
//!
//! A fault plan is installed for a directory ([`install`]); an operation on a path under it
//! asks the plan first, and the plan may answer `EIO`, `ENOSPC` or, for a write, a torn write
//! (a prefix written, then `EIO`). Without a plan installed the cost is one relaxed atomic
//! load. Plans are per directory, so tests running in parallel on their own temporary
//! directories do not see each other's faults.
//!
//! The machine-crash mode ([`crash::image`]) keeps, for a directory, what an fdatasync has made
//! durable, and after [`crash::Image::crash`] puts files back to a state a power cut could
//! leave: synced bytes kept, unsynced pages each kept or lost at random.
//!
//! What it is not: a VFS. Reads go through the mappings directly; a fault plan sees only the
//! operations that change files.

pub mod crash;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An operation a plan may fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A write of bytes (segment frames, a header, a journal or checkpoint record).
    Write,
    /// An fdatasync or fsync of a file.
    Sync,
    /// A preallocation (`fallocate`) of a new segment.
    Allocate,
    /// A rename into place.
    Rename,
}

/// What a plan makes an operation do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail with `EIO`; nothing is done.
    Eio,
    /// Fail with `ENOSPC`; nothing is done.
    Enospc,
    /// For a write: the first half of the bytes is written, then `EIO`. Otherwise as `Eio`.
    Tear,
}

/// Decides, for each operation on a path under its directory, whether it fails.
pub type Plan = Box<dyn FnMut(Op, &Path) -> Option<Fault> + Send>;

/// Fault plans plus crash images installed: zero is the fast path.
static INSTALLED: AtomicUsize = AtomicUsize::new(0);
static PLANS: Mutex<Vec<(u64, PathBuf, Plan)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Removes its plan when dropped.
#[derive(Debug)]
#[must_use = "the plan is removed when the guard is dropped"]
pub struct Installed {
    id: u64,
}

impl Drop for Installed {
    fn drop(&mut self) {
        lock().retain(|(id, _, _)| *id != self.id);
        INSTALLED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Installs `plan` for every file under `dir` until the guard is dropped.
pub fn install(dir: impl Into<PathBuf>, plan: Plan) -> Installed {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) as u64;
    lock().push((id, dir.into(), plan));
    INSTALLED.fetch_add(1, Ordering::AcqRel);
    Installed { id }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(u64, PathBuf, Plan)>> {
    PLANS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fault the plan for `path` (if any) gives `op`.
fn fault(op: Op, path: &Path) -> Option<Fault> {
    if INSTALLED.load(Ordering::Acquire) == 0 {
        return None;
    }
    if crash::crashed(path) {
        return Some(Fault::Eio);
    }
    let mut plans = lock();
    let (_, _, plan) = plans.iter_mut().find(|(_, dir, _)| path.starts_with(dir))?;
    plan(op, path)
}

fn error(f: Fault) -> io::Error {
    match f {
        Fault::Enospc => io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
        Fault::Eio | Fault::Tear => {
            io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error())
        }
    }
}

/// Writes `bytes` with `write`, unless the plan fails it (a torn write writes half first).
pub(crate) fn write(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    match fault(Op::Write, path) {
        None => write(bytes),
        Some(Fault::Tear) => {
            write(&bytes[..bytes.len() / 2])?;
            Err(error(Fault::Tear))
        }
        Some(f) => Err(error(f)),
    }
}

/// Runs `op` (a sync or a preallocation of `path`) unless the plan fails it. A successful sync
/// is what a crash image keeps.
pub(crate) fn run<T>(op: Op, path: &Path, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    match fault(op, path) {
        None => {
            let out = f()?;
            if op == Op::Sync && INSTALLED.load(Ordering::Acquire) != 0 {
                crash::synced(path)?;
            }
            Ok(out)
        }
        Some(fault) => Err(error(fault)),
    }
}

/// Renames `from` to `to` unless the plan (asked about `to`) fails it.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    match fault(Op::Rename, to) {
        None => {
            std::fs::rename(from, to)?;
            if INSTALLED.load(Ordering::Acquire) != 0 {
                crash::renamed(from, to);
            }
            Ok(())
        }
        Some(fault) => Err(error(fault)),
    }
}

/// Whether `e` says the disk (or a quota) is full.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    let nospc = rustix::io::Errno::NOSPC.raw_os_error();
    let dquot = rustix::io::Errno::DQUOT.raw_os_error();
    matches!(e.raw_os_error(), Some(c) if c == nospc || c == dquot)
}
