//! The raft log and vote on disk: an append-only file of checksummed records, fsynced before an
//! append is acknowledged, and an atomically replaced vote file.
//!
//! `raft.log` is a sequence of frames, each `[len: u32 BE][crc32c(payload): u32 BE][payload]`,
//! the payload a JSON [`Record`], replayed in order on reload (a later frame for an index
//! replaces an earlier one). A log whose prefix was purged is rewritten (tmp + fsync + rename)
//! to start with a `Purged` record naming the last purged log id, followed by the entries kept.
//! Truncating the tail cuts the file at the first removed frame, which is exact while frames
//! are in increasing index order — always, as openraft appends — and rewrites the file
//! otherwise. On reload, the first frame that is incomplete, fails its checksum or does not
//! decode ends the log: it is a torn write from a crash, and the file is cut there.
//!
//! The entries also live in memory (the metadata log is short: it is purged after each
//! snapshot), so reads never touch the file.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const FRAME_HEADER: usize = 8;
/// A record larger than this is not something we wrote: the length is torn or corrupt.
const MAX_RECORD: usize = 64 << 20;

/// One frame's payload, as read back.
#[derive(Deserialize)]
enum Record {
    Purged(LogId),
    Entry(Entry),
}

/// One frame's payload, as written; serializes exactly like [`Record`].
#[derive(Serialize)]
enum RecordRef<'a> {
    Purged(&'a LogId),
    Entry(&'a Entry),
}

/// The raft log and vote of one node. Cloning gives another handle to the same log (openraft's
/// log reader).
#[derive(Clone)]
pub(crate) struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    mem: RwLock<Memory>,
    /// Only touched inside `spawn_blocking`; openraft serializes every write.
    file: Mutex<LogFile>,
}

struct Memory {
    /// index -> (position of its frame in `raft.log`, entry)
    entries: BTreeMap<u64, (u64, Entry)>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// The index of the last entry frame in the file.
    last_frame: Option<u64>,
    /// Whether the entry frames are in increasing index order, one per entry kept (no frame
    /// replaced by a later one), so that a truncation can cut the file at a frame.
    ordered: bool,
}

impl Memory {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|(_, e)| e.log_id)
            .or(self.last_purged)
    }

    /// Notes that a frame for `index` goes to the end of the file.
    fn framed(&mut self, index: u64) {
        if self.last_frame.is_some_and(|last| index <= last) {
            self.ordered = false;
        }
        self.last_frame = Some(index);
    }

    /// The whole log as a file: the purge record, then every entry in index order; with where
    /// each entry's frame starts.
    fn encode_all(&mut self) -> io::Result<(Vec<u8>, Placement)> {
        let mut content = Vec::new();
        if let Some(purged) = &self.last_purged {
            encode_frame(&mut content, &RecordRef::Purged(purged))?;
        }
        let mut positions = Vec::with_capacity(self.entries.len());
        for (index, (_, entry)) in &self.entries {
            positions.push((*index, content.len() as u64));
            encode_frame(&mut content, &RecordRef::Entry(entry))?;
        }
        self.ordered = true;
        self.last_frame = self.entries.keys().next_back().copied();
        Ok((content, positions))
    }

    fn relocate(&mut self, positions: Placement) {
        for (index, position) in positions {
            if let Some(slot) = self.entries.get_mut(&index) {
                slot.0 = position;
            }
        }
    }
}

/// Entries' new frame positions after a rewrite: (index, position).
type Placement = Vec<(u64, u64)>;

struct LogFile {
    path: PathBuf,
    file: File,
    len: u64,
}

impl LogFile {
    /// Appends frames and fsyncs them; returns the position of the first.
    fn append(&mut self, frames: &[u8]) -> io::Result<u64> {
        let start = self.len;
        let written = self
            .file
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.file.write_all(frames))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Leave no half-written frame behind us for the next append to follow.
            let _ = self.file.set_len(start);
            return Err(e);
        }
        self.len = start + frames.len() as u64;
        Ok(start)
    }

    fn truncate(&mut self, position: u64) -> io::Result<()> {
        self.file.set_len(position)?;
        self.file.sync_data()?;
        self.len = position;
        Ok(())
    }

    /// Replaces the whole file with `content`, atomically.
    fn replace(&mut self, dir: &Path, content: &[u8]) -> io::Result<()> {
        write_atomically(dir, &self.path, content, true)?;
        self.file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        self.len = content.len() as u64;
        Ok(())
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting a torn tail.
    pub(crate) fn open(dir: &Path) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        for stale in [LOG_FILE, VOTE_FILE, COMMITTED_FILE] {
            let _ = fs::remove_file(tmp_path(&dir.join(stale)));
        }
        let vote = match fs::read(dir.join(VOTE_FILE)) {
            Ok(bytes) => Some(serde_json::from_slice::<Vote>(&bytes).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{VOTE_FILE}: {e}"))
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        // Only a hint: a missing or unreadable one means "re-apply once the leader says".
        let committed = fs::read(dir.join(COMMITTED_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Option<LogId>>(&bytes).ok())
            .flatten();

        let path = dir.join(LOG_FILE);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if created {
            sync_dir(dir)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (mut mem, valid) = decode_log(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                valid,
                len = bytes.len(),
                "raft log has a torn or corrupt tail; cutting it"
            );
            file.set_len(valid as u64)?;
            file.sync_data()?;
        }
        mem.vote = vote;
        // A committed id past the log (it cannot be, unless the disk lied) would make openraft
        // re-apply entries that are not there.
        mem.committed =
            committed.filter(|c| mem.last_log_id().is_some_and(|last| c.index <= last.index));
        Ok(LogStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                mem: RwLock::new(mem),
                file: Mutex::new(LogFile {
                    path,
                    file,
                    len: valid as u64,
                }),
            }),
        })
    }

    /// Runs file I/O off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| io::Error::other(format!("raft log I/O task failed: {e}")))?
    }
}

/// Parses frames from the start; returns what they hold and how many bytes were valid.
fn decode_log(bytes: &[u8]) -> (Memory, usize) {
    let mut mem = Memory {
        entries: BTreeMap::new(),
        last_purged: None,
        vote: None,
        committed: None,
        last_frame: None,
        ordered: true,
    };
    let mut pos = 0usize;
    while let Some((record, next)) = decode_frame(bytes, pos) {
        match record {
            Record::Purged(id) => {
                mem.last_purged = Some(id);
                mem.entries = mem.entries.split_off(&(id.index + 1));
            }
            Record::Entry(entry) => {
                mem.framed(entry.log_id.index);
                mem.entries.insert(entry.log_id.index, (pos as u64, entry));
            }
        }
        pos = next;
    }
    (mem, pos)
}

/// The record of the frame at `pos` and where the next frame starts, or `None` where the log
/// ends: no more bytes, or a frame that is incomplete or damaged.
fn decode_frame(bytes: &[u8], pos: usize) -> Option<(Record, usize)> {
    let header = bytes.get(pos..pos.checked_add(FRAME_HEADER)?)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let start = pos + FRAME_HEADER;
    let payload = bytes.get(start..start + len)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let record = serde_json::from_slice(payload).ok()?;
    Some((record, start + len))
}

fn encode_frame(out: &mut Vec<u8>, record: &RecordRef<'_>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    serde_json::to_writer(&mut *out, record).map_err(io::Error::other)?;
    let payload = &out[start + FRAME_HEADER..];
    if payload.len() > MAX_RECORD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "raft log record of {} bytes exceeds {MAX_RECORD}",
                payload.len()
            ),
        ));
    }
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `content` so that a crash leaves either the old or the new file:
/// write a temporary file, fsync it (when `durable`), rename it over, fsync the directory.
pub(super) fn write_atomically(
    dir: &Path,
    path: &Path,
    content: &[u8],
    durable: bool,
) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(content)?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, path)?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

fn log_error(e: &io::Error) -> StorageError {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let mem = self.shared.mem.read();
        Ok(mem
            .entries
            .range(range)
            .map(|(_, (_, e))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.shared.mem.read();
        Ok(LogState {
            last_purged_log_id: mem.last_purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes =
            serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.blocking(move |shared| {
            write_atomically(&shared.dir, &shared.dir.join(VOTE_FILE), &bytes, true)
        })
        .await
        .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.shared.mem.write().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.mem.read().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes =
            serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        // Not fsynced: a committed id that is lost or stale only delays re-applying at start.
        self.blocking(move |shared| {
            write_atomically(&shared.dir, &shared.dir.join(COMMITTED_FILE), &bytes, false)
        })
        .await
        .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        self.shared.mem.write().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.mem.read().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let mut frames = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for entry in &entries {
            positions.push(frames.len() as u64);
            encode_frame(&mut frames, &RecordRef::Entry(entry)).map_err(|e| log_error(&e))?;
        }
        match self
            .blocking(move |shared| shared.file.lock().append(&frames))
            .await
        {
            Ok(start) => {
                let mut mem = self.shared.mem.write();
                for (entry, position) in entries.into_iter().zip(positions) {
                    mem.framed(entry.log_id.index);
                    mem.entries
                        .insert(entry.log_id.index, (start + position, entry));
                }
                drop(mem);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(log_error(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        enum Cut {
            At(u64),
            Rewrite(Vec<u8>, Placement),
        }
        let cut = {
            let mut mem = self.shared.mem.write();
            let removed = mem.entries.split_off(&log_id.index);
            match removed.values().next() {
                None => return Ok(()),
                Some((position, _)) if mem.ordered => {
                    mem.last_frame = mem.entries.keys().next_back().copied();
                    Cut::At(*position)
                }
                Some(_) => {
                    let (content, positions) = mem.encode_all().map_err(|e| log_error(&e))?;
                    Cut::Rewrite(content, positions)
                }
            }
        };
        match cut {
            Cut::At(position) => self
                .blocking(move |shared| shared.file.lock().truncate(position))
                .await
                .map_err(|e| log_error(&e)),
            Cut::Rewrite(content, positions) => {
                self.blocking(move |shared| shared.file.lock().replace(&shared.dir, &content))
                    .await
                    .map_err(|e| log_error(&e))?;
                self.shared.mem.write().relocate(positions);
                Ok(())
            }
        }
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The kept entries are rewritten behind a `Purged` record, then their positions updated.
        let (content, positions) = {
            let mut mem = self.shared.mem.write();
            if mem.last_purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            mem.last_purged = Some(log_id);
            mem.entries = mem.entries.split_off(&(log_id.index + 1));
            mem.encode_all().map_err(|e| log_error(&e))?
        };
        self.blocking(move |shared| shared.file.lock().replace(&shared.dir, &content))
            .await
            .map_err(|e| log_error(&e))?;
        self.shared.mem.write().relocate(positions);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::controller::image::MetadataCommand;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(MetadataCommand::AllocateProducerIds {
                count: index as i64,
            }),
        }
    }

    async fn indexes(store: &mut LogStore) -> Vec<u64> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn appended_entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((1..=5).map(|i| entry(1, i)))
            .await
            .unwrap();
        store
            .blocking_append((6..=7).map(|i| entry(2, i)))
            .await
            .unwrap();
        drop(store);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, (1..=7).collect::<Vec<_>>());
        let entries = store.try_get_log_entries(6..7).await.unwrap();
        assert_eq!(entries[0].log_id, log_id(2, 6));
        assert!(matches!(
            entries[0].payload,
            EntryPayload::Normal(MetadataCommand::AllocateProducerIds { count: 6 })
        ));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(2, 7)));
        assert_eq!(state.last_purged_log_id, None);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_the_log_goes_on_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((1..=3).map(|i| entry(1, i)))
            .await
            .unwrap();
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let full = fs::read(&path).unwrap();

        // A crash in the middle of writing a fourth frame: only part of it reached the disk.
        let mut torn = full.clone();
        let mut fourth = Vec::new();
        encode_frame(&mut fourth, &RecordRef::Entry(&entry(1, 4))).unwrap();
        torn.extend_from_slice(&fourth[..fourth.len() / 2]);
        fs::write(&path, &torn).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            full.len() as u64,
            "the tail is cut"
        );
        store.blocking_append([entry(1, 4)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4]);
        drop(store);

        // A flipped byte in the last frame fails its checksum: the log ends before it.
        let mut damaged = fs::read(&path).unwrap();
        let last = damaged.len() - 3;
        damaged[last] ^= 0xff;
        fs::write(&path, &damaged).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn truncate_and_purge_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((1..=10).map(|i| entry(1, i)))
            .await
            .unwrap();
        store.truncate(log_id(1, 8)).await.unwrap();
        store
            .blocking_append((8..=9).map(|i| entry(2, i)))
            .await
            .unwrap();
        store.purge(log_id(1, 4)).await.unwrap();
        store.blocking_append([entry(2, 10)]).await.unwrap();
        drop(store);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, (5..=10).collect::<Vec<_>>());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(2, 10)));
        assert_eq!(
            store.try_get_log_entries(8..9).await.unwrap()[0].log_id,
            log_id(2, 8)
        );

        // Truncating right after a purge cuts behind the `Purged` record.
        store.truncate(log_id(1, 5)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, Vec::<u64>::new());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 4)));

        // Purging past the end leaves an empty log that goes on after the purged id.
        store.purge(log_id(3, 20)).await.unwrap();
        store.blocking_append([entry(3, 21)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![21]);
    }

    #[tokio::test]
    async fn vote_and_committed_are_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), None);
        let mut vote = Vote::new(7, 2);
        vote.commit();
        store.save_vote(&vote).await.unwrap();
        store
            .blocking_append((1..=3).map(|i| entry(7, i)))
            .await
            .unwrap();
        store.save_committed(Some(log_id(7, 2))).await.unwrap();
        drop(store);

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(7, 2)));
        assert!(!dir.path().join("vote.json.tmp").exists());
    }

    #[tokio::test]
    async fn entries_written_out_of_order_replace_earlier_ones_durably() {
        // openraft appends in order after truncating; its storage suite does not, and a map's
        // semantics are what it expects: the last entry written for an index wins.
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((1..=4).map(|i| entry(1, i)))
            .await
            .unwrap();
        store.blocking_append([entry(2, 2)]).await.unwrap();
        store.blocking_append([entry(2, 6)]).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 6]);
        assert_eq!(
            store.try_get_log_entries(2..3).await.unwrap()[0].log_id,
            log_id(2, 2)
        );

        // Truncating such a file rewrites it: the replaced frame must not come back.
        store.truncate(log_id(1, 3)).await.unwrap();
        store.truncate(log_id(2, 2)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1]);
        store.blocking_append([entry(3, 2)]).await.unwrap();
        store.truncate(log_id(3, 2)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&mut store).await, vec![1]);
    }
}
