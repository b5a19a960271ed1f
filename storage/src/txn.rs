//! Cross-shard transactions: the commits of one request that land on several shards become
//! visible together, and stay all-or-nothing across a crash at any point, without a write to
//! any file on the way.
//!
//! Protocol (driven by the service, one transaction per multi-shard or idempotent request):
//! 1. [`crate::Log::begin_txn`] marks the id pending, in memory only, with a floor (the lowest
//!    high-water mark of the shards it will write) that bounds the watermark until it is
//!    decided. Nothing is journaled.
//! 2. Each part is appended to its shard as an ordinary batch whose frames carry
//!    `flags::TXN_PART` and `aux = id`. The id names its participants: the number of shard
//!    parts (low 13 bits) and whether a participant outside the shards (the service's
//!    idempotency record) belongs to it ([`EXTERNAL`]). Readers stop at a frame of a pending
//!    transaction (they neither return nor skip it), so nobody sees a part before the whole.
//! 3. Once every part is appended (and synced, for `sync` writes, by the writers' own group
//!    commit) and the outside participant is written, [`Txns::commit`] clears the pending mark
//!    in memory: readers go on. If a part fails, [`Txns::abort`] journals `Aborted` durably (the
//!    one fsync of the protocol, on the failure path only) and readers skip the parts for good.
//!
//! Recovery ([`Txns::recover`]) commits a transaction exactly when all its parts are there: it
//! reads every shard from the journal's `Cut` to its end, groups the `TXN_PART` batches by id,
//! and aborts (durably) every id with fewer shard parts than it names, or whose outside
//! participant says it does not hold it. A part is appended only after its transaction began,
//! so the `Cut` is kept behind every part of a transaction not yet settled: the maintenance
//! thread's checkpoint opens an *epoch* (the shards' end positions) and closes it once every
//! transaction begun in it is settled — committed and flushed by a later checkpoint, or aborted
//! durably. The `Cut` it records is the positions of the oldest epoch with a transaction not
//! settled, with the ids of the committed transactions that were in flight when that epoch
//! opened (begun before it, so settled now, and perhaps with parts on both sides): recovery
//! takes those as they are and judges the others by their parts, every one of which lies
//! beyond the cut. What it reads is a checkpoint interval or two, never the sealed history.
//!
//! `Aborted` records are kept until retention has removed every commit up to the highest ULID
//! their parts may hold; the journal is rewritten (temporary file, fsync, rename) when they are
//! pruned or it outgrows [`TXN_JOURNAL_BYTES_MAX`], always on the maintenance thread.
//!
//! What it is not: an isolation mechanism between transactions (there is no read set).

use crate::error::{Result, StorageError};
use crate::format::{self, TxnRecord};
use idgen::Ulid;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// The journal is compacted when it grows past this.
pub const TXN_JOURNAL_BYTES_MAX: u64 = 16 << 20;
/// The bits of an id that count its shard parts (up to [`crate::SHARDS_MAX`]).
pub const PARTS_MASK: u64 = 0x1fff;
/// The bit of an id that says a participant outside the shards belongs to it
/// ([`External::holds`] decides it at recovery).
pub const EXTERNAL: u64 = 1 << 15;

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

/// A participant of transactions outside the shards (the service's idempotency records):
/// recovery asks it about every whole transaction whose id has [`EXTERNAL`] set.
pub trait External: std::fmt::Debug + Send + Sync {
    /// Whether its part of transaction `id` is durable.
    fn holds(&self, id: u64) -> bool;

    /// Makes every part it has written durable. The checkpoint calls it after flushing the
    /// shards and before its cut passes the transactions committed so far.
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The [`External`] of a log that has none: no transaction of it can be whole with one.
#[derive(Debug, Default)]
pub struct NoExternal;

impl External for NoExternal {
    fn holds(&self, _id: u64) -> bool {
        false
    }
}

/// A new transaction id for `parts` shard parts (at most [`PARTS_MASK`]), with an outside
/// participant if `external`: 48 random bits, then the [`EXTERNAL`] bit, then the part count.
pub fn new_id(parts: u16, external: bool) -> u64 {
    debug_assert!(u64::from(parts) <= PARTS_MASK);
    (fastrand::u64(..) << 16)
        | if external { EXTERNAL } else { 0 }
        | (u64::from(parts) & PARTS_MASK)
}

/// How many shard parts transaction `id` has.
pub fn parts_of(id: u64) -> usize {
    (id & PARTS_MASK) as usize
}

/// Whether transaction `id` has a participant outside the shards.
pub fn is_external(id: u64) -> bool {
    id & EXTERNAL != 0
}

/// The transactions of one log: who is pending, who is aborted, and what recovery must read.
#[derive(Debug)]
pub struct Txns {
    /// Pending and aborted transactions; an id not here is visible.
    states: RwLock<HashMap<u64, Visibility>>,
    live: Mutex<Live>,
    journal: Mutex<Journal>,
}

/// Undecided transactions and the epochs that say what recovery must read.
#[derive(Debug)]
struct Live {
    /// Undecided transactions: (floor, epoch number).
    pending: HashMap<u64, (Ulid, u64)>,
    /// Open epochs, oldest first; the last is the current one.
    epochs: VecDeque<Epoch>,
    /// Number of `epochs[0]`.
    first_epoch: u64,
}

impl Live {
    /// Epoch number `n`, if still open.
    fn epoch(&mut self, n: u64) -> Option<&mut Epoch> {
        let i = usize::try_from(n.checked_sub(self.first_epoch)?).ok()?;
        self.epochs.get_mut(i)
    }

    /// Applies `f` to each epoch `snap` took commits from, with the count it took.
    fn each_taken(&mut self, snap: EpochSnapshot, f: impl Fn(&mut Epoch, usize)) {
        for (k, n) in snap.committed.into_iter().enumerate() {
            if let Some(e) = self.epoch(snap.first_epoch + k as u64) {
                f(e, n);
            }
        }
    }
}

#[derive(Debug)]
struct Epoch {
    /// Every shard's end when the epoch opened: parts of transactions begun in it lie beyond.
    positions: Vec<(u64, u64)>,
    /// The transactions undecided when it opened, all begun earlier: they may have parts on
    /// both sides of `positions`.
    in_flight: Vec<u64>,
    /// Transactions begun in it and not settled yet.
    unsettled: usize,
    /// Of those, committed since the last checkpoint started (settled once it flushed).
    committed_unflushed: usize,
}

/// What a checkpoint took from the epochs before it flushed ([`Txns::open_epoch`]).
#[derive(Debug)]
pub(crate) struct EpochSnapshot {
    first_epoch: u64,
    committed: Vec<usize>,
}

/// What recovery's scan found: per transaction id, the shards holding a part of it and the
/// highest ULID among those parts.
pub(crate) type FoundParts = HashMap<u64, (HashSet<u32>, u128)>;

/// A cut: per shard (segment sequence, offset), and the committed transactions straddling it.
type CutState = (Vec<(u64, u64)>, Vec<u64>);

#[derive(Debug)]
struct Journal {
    path: PathBuf,
    /// `None` for a log opened read-only: nothing is ever written.
    file: Option<File>,
    len: u64,
    /// The file is whole and as this build writes it (its header, then whole records): what
    /// recovery decides needs no rewrite unless it aborts something.
    clean: bool,
    /// Aborted ids and the highest ULID their parts may hold.
    aborts: HashMap<u64, u128>,
    /// The cut on disk: positions, and the settled committed transactions straddling them.
    cut: Option<CutState>,
    /// Records of earlier builds still to decide at recovery: begun (no commit) and committed.
    legacy_open: HashSet<u64>,
    legacy_committed: HashMap<u64, Vec<format::TxnPart>>,
}

impl Txns {
    /// Reads the journal in `dir` for a log of `shards` shards, creating the file if missing
    /// unless `read_only` (then nothing is ever written: recovery decides in memory only). No
    /// reader may exist before [`Txns::recover`].
    pub(crate) fn load(dir: &Path, shards: usize, read_only: bool) -> Result<Txns> {
        let path = dir.join("txn.journal");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StorageError::io("read transaction journal", &path, e)),
        };
        let mut aborts = HashMap::new();
        let mut cut = None;
        let mut legacy_open = HashSet::new();
        let mut legacy_committed = HashMap::new();
        let mut clean = false;
        if !bytes.is_empty() {
            format::decode_txn_journal_header(&bytes).map_err(|reason| StorageError::Corrupt {
                segment: path.clone(),
                offset: 0,
                reason,
            })?;
            let mut at = format::TXN_JOURNAL_HEADER_LEN;
            // A torn or damaged record ends the journal: records are appended in order, and
            // nothing after a record that never became whole was relied on.
            while let Some((rec, len)) = format::decode_txn_record(&bytes[at..]) {
                match rec {
                    TxnRecord::Begin { id, .. } => {
                        legacy_open.insert(id);
                    }
                    TxnRecord::Commit { id, parts } => {
                        if legacy_open.remove(&id) {
                            legacy_committed.insert(id, parts);
                        }
                    }
                    TxnRecord::Abort { id } => {
                        legacy_open.remove(&id);
                        legacy_committed.remove(&id);
                        aborts.insert(id, u128::MAX);
                    }
                    TxnRecord::Aborted { id, last } => {
                        aborts.insert(id, last);
                    }
                    TxnRecord::Cut { positions, committed } if positions.len() == shards => {
                        cut = Some((positions, committed));
                    }
                    TxnRecord::Cut { .. } => {}
                }
                at += len;
            }
            clean = at == bytes.len()
                && bytes[..format::TXN_JOURNAL_HEADER_LEN] == format::encode_txn_journal_header();
        }
        let states = aborts.keys().map(|&id| (id, Visibility::Aborted)).collect();
        let file = if read_only {
            None
        } else {
            Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| StorageError::io("open transaction journal", &path, e))?,
            )
        };
        let len = bytes.len() as u64;
        let first = Epoch {
            positions: vec![(0, 0); shards],
            in_flight: Vec::new(),
            unsettled: 0,
            committed_unflushed: 0,
        };
        Ok(Txns {
            states: RwLock::new(states),
            live: Mutex::new(Live {
                pending: HashMap::new(),
                epochs: VecDeque::from([first]),
                first_epoch: 0,
            }),
            journal: Mutex::new(Journal {
                path,
                file,
                len,
                clean,
                aborts,
                cut,
                legacy_open,
                legacy_committed,
            }),
        })
    }

    /// Decides every transaction a crash left undecided: reads each shard from the cut,
    /// commits the ids whose parts are all there (and whose outside participant, if they name
    /// one, holds them), aborts the rest, and rewrites the journal with the aborts, durably.
    /// `scan(cut)` reads the shards from the cut (`LogInner::txn_parts_from`); `present(shard,
    /// first ULID, count)` checks a part that an earlier build journaled. Call once, after the
    /// shards are recovered and before any reader or writer runs. Returns the ids aborted and
    /// how many commits the scan read.
    pub(crate) fn recover(
        &self,
        scan: impl FnOnce(&[(u64, u64)]) -> Result<(FoundParts, u64)>,
        external: &dyn External,
        present: impl Fn(u32, u128, u32) -> Result<bool>,
    ) -> Result<(Vec<u64>, u64)> {
        let (cut, legacy_open, legacy_committed) = {
            let mut j = lock(&self.journal);
            (
                j.cut.clone(),
                std::mem::take(&mut j.legacy_open),
                std::mem::take(&mut j.legacy_committed),
            )
        };
        let mut aborted_now: Vec<(u64, u128)> =
            legacy_open.into_iter().map(|id| (id, u128::MAX)).collect();
        for (id, parts) in legacy_committed {
            let mut whole = true;
            for (shard, first, n) in parts {
                whole &= present(shard, first, n)?;
            }
            if !whole {
                aborted_now.push((id, u128::MAX));
            }
        }
        // Without a cut the journal is new or an earlier build's, whose parts all have records.
        let mut scanned = 0;
        if let Some((cut, straddling)) = cut {
            let (mut found, read) = scan(&cut)?;
            scanned = read;
            // Settled before the crash, with parts on both sides of the cut: as they are.
            found.retain(|id, _| !straddling.contains(id));
            for (id, (on, last)) in found {
                let whole = on.len() == parts_of(id) && (!is_external(id) || external.holds(id));
                if !whole {
                    aborted_now.push((id, last));
                }
            }
        }
        let mut j = lock(&self.journal);
        let mut states = self.states_mut();
        for &(id, last) in &aborted_now {
            j.aborts.insert(id, last);
            states.insert(id, Visibility::Aborted);
        }
        drop(states);
        // Read-only: decided in memory only. A journal that is whole and current and gains no
        // abort is not rewritten, so opening a log needs no free space for it (a full disk).
        if j.file.is_some() && (!j.clean || !aborted_now.is_empty()) {
            j.rewrite()?;
        }
        Ok((aborted_now.into_iter().map(|(id, _)| id).collect(), scanned))
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

    /// A fresh id for a transaction of `parts` shard parts (and an outside participant if
    /// `external`), unused by any transaction this log still tracks.
    pub fn new_id(&self, parts: u16, external: bool) -> u64 {
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        loop {
            let id = new_id(parts, external);
            if !states.contains_key(&id) {
                return id;
            }
        }
    }

    /// Starts transaction `id`: its parts wait (readers stop at them) and `floor()` — run under
    /// the lock that [`Txns::pending_floor`] takes, so a watermark read never sees the floor
    /// appear below a value it already answered — bounds the watermark until it is decided.
    /// In memory only. Callers: [`crate::Log::begin_txn`].
    pub(crate) fn begin(&self, id: u64, floor: impl FnOnce() -> Ulid) {
        self.states_mut().insert(id, Visibility::Pending);
        let mut live = lock(&self.live);
        let epoch = live.first_epoch + live.epochs.len() as u64 - 1;
        live.epochs.back_mut().expect("one epoch is always open").unsettled += 1;
        let floor = floor();
        live.pending.insert(id, (floor, epoch));
    }

    /// The lowest floor of the undecided transactions: a part of one of them may still appear
    /// (or become visible) above it, never at or below it. `None` when none is undecided.
    pub fn pending_floor(&self) -> Option<Ulid> {
        lock(&self.live).pending.values().map(|&(f, _)| f).min()
    }

    /// Commits `id`, whose parts (and outside participant) are all written: readers go on.
    /// In memory only; the next checkpoint settles it once it has flushed the parts.
    pub fn commit(&self, id: u64) {
        let mut live = lock(&self.live);
        if let Some((_, n)) = live.pending.remove(&id)
            && let Some(e) = live.epoch(n)
        {
            e.committed_unflushed += 1;
        }
        drop(live);
        self.states_mut().remove(&id);
    }

    /// Aborts `id`, none of whose parts holds a ULID above `last` (`u128::MAX` if unknown):
    /// readers skip its parts at once, and the `Aborted` record is made durable before this
    /// returns. If that fails, the transaction stays unsettled, so recovery decides it from
    /// what is on disk: the caller cannot tell its client that nothing was written.
    pub fn abort(&self, id: u64, last: u128) -> Result<()> {
        self.states_mut().insert(id, Visibility::Aborted);
        let epoch = lock(&self.live).pending.remove(&id).map(|(_, e)| e);
        let mut j = lock(&self.journal);
        // Kept even if the append fails: the record may be on disk all the same (a failed
        // fdatasync), and a later rewrite of the journal must not drop it.
        j.aborts.insert(id, last);
        j.append(&TxnRecord::Aborted { id, last })?;
        drop(j);
        if let Some(n) = epoch
            && let Some(e) = lock(&self.live).epoch(n)
        {
            e.unsettled -= 1;
        }
        Ok(())
    }

    /// Opens a new epoch at `positions()` (every shard's end, read under the lock that
    /// `begin` takes) and takes the commits counted so far, which the checkpoint's flush is
    /// about to make durable. Pass the snapshot to [`Txns::settle`] after the flush.
    pub(crate) fn open_epoch(&self, positions: impl FnOnce() -> Vec<(u64, u64)>) -> EpochSnapshot {
        let mut live = lock(&self.live);
        let committed =
            live.epochs.iter_mut().map(|e| std::mem::take(&mut e.committed_unflushed)).collect();
        let positions = positions();
        let in_flight = live.pending.keys().copied().collect();
        live.epochs.push_back(Epoch { positions, in_flight, unsettled: 0, committed_unflushed: 0 });
        EpochSnapshot { first_epoch: live.first_epoch, committed }
    }

    /// After a checkpoint that failed before its flush completed: gives back the commits
    /// `snap` took, so the next checkpoint settles them.
    pub(crate) fn unsettle(&self, snap: EpochSnapshot) {
        lock(&self.live).each_taken(snap, |e, n| e.committed_unflushed += n);
    }

    /// After the flush that followed `snap`: settles the commits it took, closes the epochs
    /// with nothing unsettled, records the cut (durably, if it moved) and prunes the aborts
    /// whose commits retention removed: no shard still holds a ULID at or below `last` when
    /// `kept_from(last)` is false. Off the hot path (maintenance thread).
    pub(crate) fn settle(
        &self,
        snap: EpochSnapshot,
        still_held: impl Fn(u128) -> bool,
    ) -> Result<()> {
        let cut = {
            let mut live = lock(&self.live);
            live.each_taken(snap, |e, n| e.unsettled -= n);
            // The cut: the positions of the oldest epoch with a transaction not settled (or
            // the newest). Those begun before it are all settled, so the ones in flight when it
            // opened, which may straddle it, are aborted (on record) or committed and on disk:
            // the cut names the committed ones, and recovery takes them as they are.
            while live.epochs.len() > 1 && live.epochs[0].unsettled == 0 {
                live.epochs.pop_front();
                live.first_epoch += 1;
            }
            let front = &live.epochs[0];
            (front.positions.clone(), front.in_flight.clone())
        };
        let mut j = lock(&self.journal);
        let before = j.aborts.len();
        j.aborts.retain(|id, last| {
            let keep = still_held(*last);
            if !keep {
                self.states_mut().remove(id);
            }
            keep
        });
        let (positions, in_flight) = cut;
        let committed: Vec<u64> =
            in_flight.into_iter().filter(|id| !j.aborts.contains_key(id)).collect();
        let cut = (positions, committed);
        if j.aborts.len() < before || j.len > TXN_JOURNAL_BYTES_MAX {
            j.cut = Some(cut);
            return j.rewrite();
        }
        if j.cut.as_ref() != Some(&cut) {
            let (positions, committed) = cut.clone();
            j.append(&TxnRecord::Cut { positions, committed })?;
            j.cut = Some(cut);
        }
        Ok(())
    }

    /// The states, for writing.
    fn states_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Visibility>> {
        self.states.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Aborted transactions still tracked (their parts may still be stored).
    pub fn aborted_count(&self) -> usize {
        lock(&self.journal).aborts.len()
    }

    /// Transactions begun and not yet decided.
    pub fn pending_count(&self) -> usize {
        lock(&self.live).pending.len()
    }
}

impl Journal {
    /// Replaces the file with one holding the aborts and the cut: temporary file, fsync,
    /// rename, dir fsync.
    fn rewrite(&mut self) -> Result<()> {
        if self.file.is_none() {
            return Err(StorageError::ReadOnly { op: "rewrite the transaction journal" });
        }
        let path = self.path.clone();
        let tmp = path.with_extension("journal.tmp");
        let io = |op, e| StorageError::io(op, &path, e);
        let mut bytes = format::encode_txn_journal_header().to_vec();
        for (&id, &last) in &self.aborts {
            bytes.extend_from_slice(&format::encode_txn_record(&TxnRecord::Aborted { id, last }));
        }
        if let Some((positions, committed)) = &self.cut {
            let cut = TxnRecord::Cut { positions: positions.clone(), committed: committed.clone() };
            bytes.extend_from_slice(&format::encode_txn_record(&cut));
        }
        let mut f = File::create(&tmp).map_err(|e| io("create transaction journal", e))?;
        crate::fio::write(&tmp, &bytes, |b| f.write_all(b))
            .map_err(|e| io("write transaction journal", e))?;
        crate::fio::run(crate::fio::Op::Sync, &tmp, || f.sync_all())
            .map_err(|e| io("fsync transaction journal", e))?;
        crate::fio::rename(&tmp, &path).map_err(|e| io("rename transaction journal", e))?;
        if let Some(dir) = path.parent() {
            crate::segment::sync_dir(dir)?;
        }
        self.file = Some(
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io("open transaction journal", e))?,
        );
        self.len = bytes.len() as u64;
        self.clean = true;
        Ok(())
    }

    /// Appends `r` durably (fdatasync).
    fn append(&mut self, r: &TxnRecord) -> Result<()> {
        let bytes = format::encode_txn_record(r);
        let io = |op, e| StorageError::io(op, &self.path, e);
        let Some(file) = self.file.as_mut() else {
            return Err(StorageError::ReadOnly { op: "append to the transaction journal" });
        };
        let path = &self.path;
        let written = crate::fio::write(path, &bytes, |b| file.write_all(b))
            .map_err(|e| io("append to transaction journal", e));
        if let Err(e) = written {
            // Cut a partial record off, or every later record would be unreadable after it.
            let _ = file.set_len(self.len);
            return Err(e);
        }
        // Written whole: it is part of the file from now on, whether or not the sync below
        // succeeds (a later failed append cuts back to here, never into this record).
        self.len += bytes.len() as u64;
        crate::fio::run(crate::fio::Op::Sync, path, || file.sync_data())
            .map_err(|e| io("fdatasync transaction journal", e))?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
