//! Cross-shard transactions: the commits of one request that land on several shards become
//! visible together, and stay all-or-nothing across a crash at any point.
//!
//! Protocol (driven by the service, one transaction per multi-shard request):
//! 1. [`Txns::begin`] journals `Begin{id, parts}` **durably** and marks the id pending.
//! 2. Each part is appended to its shard as an ordinary batch whose frames carry
//!    `flags::TXN_PART` and `aux = id`. Readers stop at a frame of a pending transaction
//!    (they neither return nor skip it), so nobody sees a part before the whole.
//! 3. Once every part is appended (and synced, for `sync` writes), [`Txns::commit`] journals
//!    `Commit{id, parts}` with each part's shard, first ULID and count (durably for `sync`)
//!    and clears the pending mark: readers go on. If any part fails, [`Txns::abort`] journals
//!    `Abort{id}` durably and readers skip the parts for good.
//!
//! Recovery ([`Txns::open`]): a `Begin` without an outcome is aborted (its request was never
//! acknowledged); a `Commit` whose parts are not all found in their shards (a machine crash lost
//! an unsynced part) is aborted too. Because `Begin` is on disk before any part is written,
//! every part on disk has its transaction in the journal until it is settled. After recovery
//! the journal is rewritten with the aborted ids only; the maintenance thread rewrites it
//! (aborts, open begins, unsettled commits) when it grows past [`TXN_JOURNAL_BYTES_MAX`].
//!
//! What it is not: an isolation mechanism between transactions (there is no read set), or
//! cheap: a transaction costs one journal fsync (`async`) or two (`sync`).

use crate::error::{Result, StorageError};
use crate::format::{self, TxnRecord};
use idgen::Ulid;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// The journal is compacted when it grows past this.
pub const TXN_JOURNAL_BYTES_MAX: u64 = 16 << 20;

/// What readers must do with a frame of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Committed (or not a transaction this process tracks): read it.
    Visible,
    /// Still being written: stop before it.
    Pending,
    /// Aborted: skip it.
    Aborted,
}

/// The transactions of one log: journal and in-memory states.
#[derive(Debug)]
pub struct Txns {
    states: RwLock<HashMap<u64, Visibility>>,
    /// Begun, undecided transactions, with a ULID all their parts lie above (the lowest shard
    /// mark when they began): it bounds the watermark until they are decided.
    floors: RwLock<HashMap<u64, Ulid>>,
    journal: Mutex<Journal>,
    /// Transactions `load` found begun and never decided (aborted by recovery).
    undecided: Vec<u64>,
}

#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    /// Records a rewrite must keep: aborts, begins of open transactions, and begins and commits
    /// of transactions committed after the last checkpoint (their parts may not be on disk).
    keep: HashMap<u64, Kept>,
    /// Counts appended commits; a checkpoint settles those below the count it saw.
    commits: u64,
}

#[derive(Debug, Clone)]
enum Kept {
    Open { parts: u16 },
    Committed { parts: u16, record: TxnRecord, seq: u64 },
    Aborted,
}

/// A new transaction id for `parts` shard parts: random high bits, part count in the low 16.
pub fn new_id(parts: u16) -> u64 {
    (fastrand::u64(..) << 16) | parts as u64
}

impl Txns {
    /// Reads the journal in `dir`. Transactions left open by a crash are aborted at once;
    /// committed ones wait for [`Txns::resolve`], which checks their parts once the shards are
    /// recovered and flushed. No reader may exist before `resolve`.
    pub(crate) fn load(dir: &Path) -> Result<Txns> {
        let path = dir.join("txn.journal");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StorageError::io("read transaction journal", &path, e)),
        };
        let mut keep: HashMap<u64, Kept> = HashMap::new();
        if !bytes.is_empty() {
            format::decode_txn_journal_header(&bytes).map_err(|reason| StorageError::Corrupt {
                segment: path.clone(),
                offset: 0,
                reason,
            })?;
            let mut at = format::TXN_JOURNAL_HEADER_LEN;
            // A torn or damaged record ends the journal: records are appended in order, and
            // nothing after a record that never became whole was acknowledged.
            while let Some((rec, len)) = format::decode_txn_record(&bytes[at..]) {
                match rec {
                    TxnRecord::Begin { id, parts } => {
                        keep.entry(id).or_insert(Kept::Open { parts });
                    }
                    TxnRecord::Commit { id, .. } => {
                        if let Some(Kept::Open { parts }) = keep.get(&id).cloned() {
                            keep.insert(id, Kept::Committed { parts, record: rec, seq: 0 });
                        }
                    }
                    TxnRecord::Abort { id } => {
                        keep.insert(id, Kept::Aborted);
                    }
                }
                at += len;
            }
        }
        // Begun, never decided: its request was never acknowledged.
        let mut undecided = Vec::new();
        for (&id, k) in keep.iter_mut() {
            if matches!(k, Kept::Open { .. }) {
                *k = Kept::Aborted;
                undecided.push(id);
            }
        }
        let states = keep
            .iter()
            .filter(|(_, k)| matches!(k, Kept::Aborted))
            .map(|(&id, _)| (id, Visibility::Aborted))
            .collect();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io("open transaction journal", &path, e))?;
        let len = bytes.len() as u64;
        let journal = Mutex::new(Journal { path, file, len, keep, commits: 0 });
        Ok(Txns { states: RwLock::new(states), floors: Default::default(), journal, undecided })
    }

    /// Checks every committed transaction of the journal: one whose part is missing
    /// (`present(shard, first ULID, count)` is false) is aborted. Then rewrites the journal with
    /// the aborted ids only, durably. Call once the shards are recovered and flushed. Returns
    /// the ids aborted by recovery.
    pub(crate) fn resolve(
        &self,
        present: impl Fn(u32, u128, u32) -> Result<bool>,
    ) -> Result<Vec<u64>> {
        // Checking parts reads the shards, whose readers consult `states`: no lock held here.
        let committed: Vec<(u64, Vec<format::TxnPart>)> = {
            let j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            j.keep
                .iter()
                .filter_map(|(&id, k)| match k {
                    Kept::Committed { record: TxnRecord::Commit { parts, .. }, .. } => {
                        Some((id, parts.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        let mut aborted_now = self.undecided.clone();
        for (id, parts) in committed {
            let mut whole = true;
            for (shard, first, n) in parts {
                whole &= present(shard, first, n)?;
            }
            if !whole {
                aborted_now.push(id);
            }
        }
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let mut states = self.states.write().unwrap_or_else(|p| p.into_inner());
        for &id in &aborted_now {
            j.keep.insert(id, Kept::Aborted);
            states.insert(id, Visibility::Aborted);
        }
        let keep: HashMap<u64, Kept> = j
            .keep
            .iter()
            .filter(|(_, k)| matches!(k, Kept::Aborted))
            .map(|(&id, k)| (id, k.clone()))
            .collect();
        let path = j.path.clone();
        *j = Journal::rewrite(&path, keep, 0)?;
        Ok(aborted_now)
    }

    /// What readers do with frames of transaction `id`.
    pub fn visibility(&self, id: u64) -> Visibility {
        self.states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(Visibility::Visible)
    }

    /// A fresh id for a transaction of `parts` parts, unused by any transaction this log
    /// still tracks.
    pub fn new_id(&self, parts: u16) -> u64 {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        loop {
            let id = new_id(parts);
            if !states.contains_key(&id) {
                return id;
            }
        }
    }

    /// Starts transaction `id`, whose parts will all have ULIDs above `floor` (callers:
    /// [`crate::Log::begin_txn`]): journals it durably and makes its parts wait.
    pub(crate) fn begin(&self, id: u64, floor: Ulid) -> Result<()> {
        self.floors.write().unwrap_or_else(|p| p.into_inner()).insert(id, floor);
        self.states.write().unwrap_or_else(|p| p.into_inner()).insert(id, Visibility::Pending);
        let parts = id as u16;
        let r = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(TxnRecord::Begin { id, parts }, true);
        if r.is_err() {
            self.states.write().unwrap_or_else(|p| p.into_inner()).insert(id, Visibility::Aborted);
            self.floors.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        }
        r
    }

    /// The lowest floor of the undecided transactions: a part of one of them may still appear
    /// (or become visible) above it, never at or below it. `None` when none is undecided.
    pub fn pending_floor(&self) -> Option<Ulid> {
        self.floors.read().unwrap_or_else(|p| p.into_inner()).values().min().copied()
    }

    /// Commits `id` whose parts are all appended: (shard, first ULID, count) each. Durable
    /// before returning when `durable`.
    pub fn commit(&self, id: u64, parts: Vec<format::TxnPart>, durable: bool) -> Result<()> {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(TxnRecord::Commit { id, parts }, durable)?;
        self.states.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.floors.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        Ok(())
    }

    /// Aborts `id`: its parts are never visible. Readers skip them at once; the journal record
    /// is made durable (if that fails, recovery aborts it anyway: it has no commit).
    pub fn abort(&self, id: u64) -> Result<()> {
        self.states.write().unwrap_or_else(|p| p.into_inner()).insert(id, Visibility::Aborted);
        self.floors.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.journal.lock().unwrap_or_else(|p| p.into_inner()).append(TxnRecord::Abort { id }, true)
    }
}

impl Journal {
    /// Writes a fresh journal holding `keep`: temporary file, fsync, rename, dir fsync.
    fn rewrite(path: &Path, keep: HashMap<u64, Kept>, commits: u64) -> Result<Journal> {
        let tmp = path.with_extension("journal.tmp");
        let io = |op, e| StorageError::io(op, path, e);
        let mut bytes = format::encode_txn_journal_header().to_vec();
        for (&id, k) in &keep {
            match k {
                Kept::Open { parts } => {
                    bytes.extend_from_slice(&format::encode_txn_record(&TxnRecord::Begin {
                        id,
                        parts: *parts,
                    }))
                }
                Kept::Committed { parts, record, .. } => {
                    bytes.extend_from_slice(&format::encode_txn_record(&TxnRecord::Begin {
                        id,
                        parts: *parts,
                    }));
                    bytes.extend_from_slice(&format::encode_txn_record(record));
                }
                Kept::Aborted => {
                    bytes.extend_from_slice(&format::encode_txn_record(&TxnRecord::Abort { id }))
                }
            }
        }
        let mut f = File::create(&tmp).map_err(|e| io("create transaction journal", e))?;
        f.write_all(&bytes).map_err(|e| io("write transaction journal", e))?;
        f.sync_all().map_err(|e| io("fsync transaction journal", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename transaction journal", e))?;
        if let Some(dir) = path.parent() {
            crate::segment::sync_dir(dir)?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io("open transaction journal", e))?;
        Ok(Journal { path: path.to_owned(), file, len: bytes.len() as u64, keep, commits })
    }

    fn append(&mut self, r: TxnRecord, durable: bool) -> Result<()> {
        let bytes = format::encode_txn_record(&r);
        let io = |op, e| StorageError::io(op, &self.path, e);
        let written =
            self.file.write_all(&bytes).map_err(|e| io("append to transaction journal", e));
        if let Err(e) = written {
            // Cut a partial record off, or every later record would be unreadable after it.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        if durable {
            self.file.sync_data().map_err(|e| io("fdatasync transaction journal", e))?;
        }
        self.len += bytes.len() as u64;
        match r {
            TxnRecord::Begin { id, parts } => {
                self.keep.insert(id, Kept::Open { parts });
            }
            TxnRecord::Commit { id, .. } => {
                let parts = id as u16;
                self.keep.insert(id, Kept::Committed { parts, record: r, seq: self.commits });
                self.commits += 1;
            }
            TxnRecord::Abort { id } => {
                self.keep.insert(id, Kept::Aborted);
            }
        }
        Ok(())
    }
}

impl Txns {
    /// The commit count to pass to [`Txns::settle`] once everything published now is on disk.
    pub(crate) fn commits_so_far(&self) -> u64 {
        self.journal.lock().unwrap_or_else(|p| p.into_inner()).commits
    }

    /// Forgets the commits counted below `cut` (their parts are on disk: a checkpoint flushed
    /// them) and compacts the journal if it outgrew [`TXN_JOURNAL_BYTES_MAX`]. Off the hot path.
    pub(crate) fn settle(&self, cut: u64) -> Result<()> {
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let before = j.keep.len();
        j.keep.retain(|_, k| !matches!(k, Kept::Committed { seq, .. } if *seq < cut));
        // Settled records must leave the file too: recovery would check their parts again, and
        // retention may since have removed one of them.
        if j.keep.len() < before || j.len > TXN_JOURNAL_BYTES_MAX {
            let (keep, commits) = (j.keep.clone(), j.commits);
            *j = Journal::rewrite(&j.path.clone(), keep, commits)?;
        }
        Ok(())
    }
}
