//! The machine-crash mode of the file layer: what a power cut leaves of a directory.
//!
//! [`image`] starts keeping, for every file under a directory, the bytes its last successful
//! fdatasync (or fsync) made durable; files already there count as durable. [`Image::crash`]
//! is the power cut: from then on every write, sync, preallocation and rename under the
//! directory fails with `EIO`, so nothing more is acknowledged. Once the code under test has let
//! go of its files, [`Image::restore`] rewrites each one as the disk could hold it after the
//! reboot: every 4 KiB page that changed since the last sync is, at random, its synced version
//! or its latest one (the kernel may have written any dirty page back, in any order), and a
//! length that changed is either length. A file never synced keeps, at random, nothing or a
//! random choice of its pages (the others zero).
//!
//! What it is not: a model of directory entries. A rename and a deletion are durable at once
//! (shardlog fsyncs the directory after each, which `dirs` tests), and a page's version is its
//! latest or its synced one, never one in between.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// The page size of the model: the unit the kernel writes back.
const PAGE_BYTES: usize = 4096;

struct Entry {
    id: u64,
    dir: PathBuf,
    crashed: bool,
    /// Path → its durable bytes.
    durable: HashMap<PathBuf, Vec<u8>>,
}

static IMAGES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn lock() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    IMAGES.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a power cut could leave of a directory; see the module documentation.
#[derive(Debug)]
#[must_use = "the image stops being kept when dropped"]
pub struct Image {
    id: u64,
    dir: PathBuf,
}

/// What [`Image::restore`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Files rewritten.
    pub files: usize,
    /// Pages changed since their last sync that came back in their synced version.
    pub pages_lost: usize,
    /// Pages changed since their last sync that came back in their latest version.
    pub pages_kept: usize,
    /// Files whose length went back to the synced one.
    pub lengths_lost: usize,
}

/// Starts keeping the durable image of `dir`; what is there now counts as durable.
pub fn image(dir: impl Into<PathBuf>) -> io::Result<Image> {
    let dir = dir.into();
    let mut durable = HashMap::new();
    for path in files_under(&dir)? {
        durable.insert(path.clone(), std::fs::read(&path)?);
    }
    let id = super::NEXT_ID.fetch_add(1, Ordering::Relaxed) as u64;
    lock().push(Entry { id, dir: dir.clone(), crashed: false, durable });
    super::INSTALLED.fetch_add(1, Ordering::AcqRel);
    Ok(Image { id, dir })
}

impl Image {
    /// The power cut: every later operation under the directory fails with `EIO`.
    pub fn crash(&self) {
        if let Some(e) = lock().iter_mut().find(|e| e.id == self.id) {
            e.crashed = true;
        }
    }

    /// Rewrites every file under the directory as the disk could hold it after the crash
    /// (crashing first if [`Image::crash`] was not called), choosing with `seed`. Call it once
    /// nothing has the files open for writing.
    pub fn restore(self, seed: u64) -> io::Result<Restored> {
        let mut rng = fastrand::Rng::with_seed(seed);
        self.restore_with(move |_, _| rng.bool())
    }

    /// [`Image::restore`] with the choices made by `keep(path, offset)`: whether the page at
    /// `offset` of `path` comes back in its latest version (and, asked with `u64::MAX`,
    /// whether a changed length does, or a never-synced file keeps anything at all).
    pub fn restore_with(self, mut keep: impl FnMut(&Path, u64) -> bool) -> io::Result<Restored> {
        self.crash();
        let durable = {
            let mut images = lock();
            let e = images.iter_mut().find(|e| e.id == self.id).expect("an image is kept");
            std::mem::take(&mut e.durable)
        };
        let mut out = Restored::default();
        for path in files_under(&self.dir)? {
            let latest = std::fs::read(&path)?;
            let mut keep = |at| keep(&path, at);
            let bytes = match durable.get(&path) {
                Some(synced) if *synced == latest => continue,
                Some(synced) => mix(&mut keep, synced, &latest, &mut out),
                None if !keep(u64::MAX) => Vec::new(),
                None => mix(&mut keep, &vec![0; latest.len()], &latest, &mut out),
            };
            std::fs::write(&path, bytes)?;
            out.files += 1;
        }
        Ok(out)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        lock().retain(|e| e.id != self.id);
        super::INSTALLED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One file after the crash: each page its synced or its latest version, either length.
fn mix(
    keep: &mut impl FnMut(u64) -> bool,
    synced: &[u8],
    latest: &[u8],
    out: &mut Restored,
) -> Vec<u8> {
    let len = if synced.len() == latest.len() || keep(u64::MAX) {
        latest.len()
    } else {
        out.lengths_lost += 1;
        synced.len()
    };
    let page = |b: &[u8], at: usize| -> Vec<u8> {
        let mut p = b.get(at..b.len().min(at + PAGE_BYTES)).unwrap_or_default().to_vec();
        p.resize(PAGE_BYTES.min(len - at), 0);
        p
    };
    let mut bytes = Vec::with_capacity(len);
    for at in (0..len).step_by(PAGE_BYTES) {
        let (old, new) = (page(synced, at), page(latest, at));
        if old == new {
            bytes.extend_from_slice(&new);
        } else if keep(at as u64) {
            out.pages_kept += 1;
            bytes.extend_from_slice(&new);
        } else {
            out.pages_lost += 1;
            bytes.extend_from_slice(&old);
        }
    }
    bytes
}

fn files_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `path` is under a crashed image.
pub(super) fn crashed(path: &Path) -> bool {
    lock().iter().any(|e| e.crashed && path.starts_with(&e.dir))
}

/// A sync of `path` succeeded: its bytes are durable now. If the crash came while it ran, it
/// did not finish in time, and fails.
pub(super) fn synced(path: &Path) -> io::Result<()> {
    let mut images = lock();
    let Some(e) = images.iter_mut().find(|e| path.starts_with(&e.dir)) else {
        return Ok(());
    };
    if e.crashed {
        return Err(io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error()));
    }
    e.durable.insert(path.to_owned(), std::fs::read(path)?);
    Ok(())
}

/// `from` was renamed to `to`: the durable bytes follow the name.
pub(super) fn renamed(from: &Path, to: &Path) {
    let mut images = lock();
    if let Some(e) = images.iter_mut().find(|e| to.starts_with(&e.dir)) {
        match e.durable.remove(from) {
            Some(bytes) => e.durable.insert(to.to_owned(), bytes),
            None => e.durable.remove(to),
        };
    }
}
