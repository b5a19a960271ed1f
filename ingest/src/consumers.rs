//! Durable consumer cursors: `{data_dir}/consumers/{log}/{name}` holds a consumer's last
//! processed ULID as text. Written atomically (temporary file, fsync, rename, directory fsync),
//! so a cursor survives restarts and never expires; deleting the log deletes its consumers.
//!
//! What it is not: a consumer group. A cursor moves only when its consumer stores it.

use idgen::Ulid;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The consumer store of a data directory.
#[derive(Debug)]
pub struct Consumers {
    dir: PathBuf,
}

impl Consumers {
    /// Consumers under `{data_dir}/consumers`.
    pub fn new(data_dir: &Path) -> std::io::Result<Consumers> {
        let dir = data_dir.join("consumers");
        std::fs::create_dir_all(&dir)?;
        Ok(Consumers { dir })
    }

    /// Stores `cursor` for consumer `name` of `log`, durably. Blocking.
    pub fn put(&self, log: &str, name: &str, cursor: Ulid) -> std::io::Result<()> {
        let dir = self.dir.join(log);
        std::fs::create_dir_all(&dir)?;
        // Names never start with a dot: this temporary name is nobody's consumer, and the
        // random part keeps concurrent writes of one consumer apart.
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{cursor}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(&dir)?.sync_all()
    }

    /// The stored cursor of consumer `name` of `log`, if any. Blocking.
    pub fn get(&self, log: &str, name: &str) -> std::io::Result<Option<Ulid>> {
        match std::fs::read_to_string(self.dir.join(log).join(name)) {
            Ok(text) => idgen::parse(text.trim()).map(Some).ok_or_else(|| {
                std::io::Error::other(format!("consumer {name} of {log}: bad cursor file"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every consumer of `log` with its cursor, by name. Blocking.
    pub fn list(&self, log: &str) -> std::io::Result<Vec<(String, Ulid)>> {
        let entries = match std::fs::read_dir(self.dir.join(log)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let Ok(name) = entry?.file_name().into_string() else { continue };
            // Temporary files start with a dot; a consumer's name never does.
            if name.starts_with('.') {
                continue;
            }
            if let Some(cursor) = self.get(log, &name)? {
                out.push((name, cursor));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Forgets every consumer of `log`. Blocking.
    pub fn delete_log(&self, log: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.dir.join(log)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
