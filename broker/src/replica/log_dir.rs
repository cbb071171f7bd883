//! Moving a replica to another log directory of this broker (AlterReplicaLogDirs) while it
//! keeps serving, as Kafka does: a thread copies the log batch by batch into a future log,
//! `<topic>-<partition>.<id>-future` in the destination, the way a follower copies its
//! leader; once it has caught up, the partition's lock is taken for the swap only: the rest
//! is copied, the future closed (durable), the current directory renamed to `-delete`, the
//! future renamed to `<topic>-<partition>` and opened in its place. `log::dirs` says how a
//! crash at any of these steps is resolved at the next start: the copy is dropped before
//! the swap, finished after it, so one complete copy is always there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;

use super::{claim_dir, Partition};
use crate::log::dirs::{delete_dir_name, future_dir_name};
use crate::log::{AppendError, IoError, LogError, PartitionLog, ReadError};

/// Bytes read from the current log per copy step.
const COPY_CHUNK: usize = 1 << 20;

/// A move in progress: the future log and how far it has copied.
pub(crate) struct FutureLog {
    /// The destination log directory.
    root: PathBuf,
    /// The future log's own directory (`…-future` in `root`).
    dir: PathBuf,
    /// `None` once the move is cancelled or swapped in.
    log: Mutex<Option<PartitionLog>>,
    end_offset: AtomicI64,
    size: AtomicU64,
    cancelled: AtomicBool,
}

/// A replica's copy being filled in another log directory, as DescribeLogDirs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FutureReplica {
    pub root: PathBuf,
    pub end_offset: i64,
    pub size: u64,
}

/// Why a move stopped; the replica stays where it was.
#[derive(Debug, thiserror::Error)]
enum MoveError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot copy into the future log: {0}")]
    Append(#[from] AppendError),
    #[error("cannot read the current log: {0}")]
    Read(#[from] ReadError),
}

/// Where the copy stands between two steps.
struct Progress {
    /// The next offset to copy; `None` to (re)start from the log start.
    next: Option<i64>,
    /// The current log's truncation count the copy matches.
    rewrites: u64,
}

impl Partition {
    /// The log directory holding this replica.
    pub fn log_dir(&self) -> PathBuf {
        let state = self.state.read();
        state
            .log
            .dir()
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf)
    }

    /// The copy a move to another log directory is filling, if one is in progress.
    pub fn future_replica(&self) -> Option<FutureReplica> {
        let future = self.moving.lock().clone()?;
        Some(FutureReplica {
            root: future.root.clone(),
            end_offset: future.end_offset.load(Ordering::Relaxed),
            size: future.size.load(Ordering::Relaxed),
        })
    }

    /// Moves this replica to log directory `root`: starts copying it there in the
    /// background (a move elsewhere in progress is cancelled), or, when it already is in
    /// `root`, cancels any move. A move already going to `root` goes on.
    pub fn move_to_log_dir(self: &Arc<Self>, root: &Path) -> Result<(), LogError> {
        if let Some(future) = self.moving.lock().as_ref() {
            if future.root == root {
                return Ok(());
            }
        }
        self.cancel_move();
        if self.log_dir() == root {
            return Ok(());
        }
        let dir = root.join(future_dir_name(&self.topic, self.index));
        claim_dir(&dir, self.topic_id)?;
        let config = self.state.read().log.config().clone();
        let log = match PartitionLog::open(&dir, config) {
            Ok(log) => log,
            Err(e) => {
                remove_future_dir(&dir);
                return Err(e);
            }
        };
        let future = Arc::new(FutureLog {
            root: root.to_path_buf(),
            dir,
            end_offset: AtomicI64::new(log.log_end_offset()),
            size: AtomicU64::new(0),
            log: Mutex::new(Some(log)),
            cancelled: AtomicBool::new(false),
        });
        *self.moving.lock() = Some(Arc::clone(&future));
        let partition = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("move-{}-{}", self.topic, self.index))
            .spawn(move || partition.run_move(&future));
        if let Err(source) = spawned {
            self.cancel_move();
            return Err(LogError::from(IoError {
                op: "start the copy thread for",
                path: root.to_path_buf(),
                source,
            }));
        }
        tracing::info!(partition = ?self, to = %root.display(), "moving the replica to another log directory");
        Ok(())
    }

    /// Stops a move in progress and removes its copy.
    pub fn cancel_move(&self) {
        let Some(future) = self.moving.lock().take() else {
            return;
        };
        future.cancelled.store(true, Ordering::Relaxed);
        // Waits for a copy step under way; the copy thread then finds nothing to copy to.
        if future.log.lock().take().is_some() {
            remove_future_dir(&future.dir);
            tracing::info!(partition = ?self, to = %future.root.display(), "log directory move cancelled");
        }
    }

    /// The copy thread: copies until caught up, then swaps; gives up (removing the copy) on
    /// an error, which leaves the replica where it was.
    fn run_move(&self, future: &Arc<FutureLog>) {
        let mut progress = Progress {
            next: None,
            rewrites: 0,
        };
        loop {
            if future.cancelled.load(Ordering::Relaxed) {
                return;
            }
            let step = {
                let mut guard = future.log.lock();
                let Some(log) = guard.as_mut() else {
                    return;
                };
                self.copy_step(log, &mut progress, future)
            };
            let result = match step {
                Ok(true) => self.swap(future, &mut progress),
                Ok(false) => Ok(false),
                Err(e) => Err(e),
            };
            match result {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(partition = ?self, to = %future.root.display(), error = %e, "log directory move failed; the replica stays where it is");
                    self.abandon(future);
                    return;
                }
            }
        }
    }

    /// Copies one chunk into the future log, restarting from the log start when the current
    /// log was truncated or its start passed the copy. Returns whether the copy is near the
    /// end (time to swap).
    fn copy_step(
        &self,
        future: &mut PartitionLog,
        progress: &mut Progress,
        shared: &FutureLog,
    ) -> Result<bool, MoveError> {
        let (read, restart, end) = {
            let state = self.state.read();
            let start = state.log.log_start_offset();
            let restart = match progress.next {
                Some(next) => progress.rewrites != state.rewrites || next < start,
                None => true,
            };
            progress.rewrites = state.rewrites;
            let from = if restart {
                start
            } else {
                progress.next.unwrap_or(start)
            };
            (
                state.log.read(from, COPY_CHUNK)?,
                restart.then_some(from),
                state.log.log_end_offset(),
            )
        };
        if let Some(from) = restart {
            // The first batch may begin below the log start (DeleteRecords inside a batch);
            // the swap moves the future's start up to the current one.
            let base = crate::log::BatchHeader::parse(&read.records)
                .map_or(from, |header| header.base_offset);
            future.truncate_fully_and_start_at(base)?;
        }
        if !read.records.is_empty() {
            future.append_replicated(&read.records)?;
        }
        let copied = future.log_end_offset();
        progress.next = Some(copied);
        shared.end_offset.store(copied, Ordering::Relaxed);
        shared.size.store(future.size_bytes(), Ordering::Relaxed);
        Ok(read.records.len() < COPY_CHUNK / 2 || copied >= end)
    }

    /// Copies what is left and swaps the future log in, holding the partition for that
    /// time. Returns false when the current log was rewritten meanwhile (the copy goes on).
    fn swap(&self, future: &FutureLog, progress: &mut Progress) -> Result<bool, MoveError> {
        // No compaction may be between its plan and its install across the swap.
        let _cleaning = self.cleaning.lock();
        let mut state = self.state.write();
        let mut guard = future.log.lock();
        let Some(log) = guard.as_mut() else {
            return Ok(true);
        };
        if progress.rewrites != state.rewrites {
            progress.next = None;
            return Ok(false);
        }
        loop {
            let next = log.log_end_offset();
            let read = state.log.read(next, COPY_CHUNK)?;
            if read.records.is_empty() {
                break;
            }
            log.append_replicated(&read.records)?;
        }
        if log.log_end_offset() != state.log.log_end_offset() {
            progress.next = None;
            return Ok(false);
        }
        let start = state.log.log_start_offset();
        if log.log_start_offset() < start {
            log.delete_records_before(start)?;
        }
        let Some(log) = guard.take() else {
            return Ok(true);
        };
        if !state.producers.is_empty() {
            if let Err(e) = state
                .producers
                .write_snapshot(&future.dir, log.log_end_offset())
            {
                tracing::warn!(partition = ?self, error = %e, "could not snapshot producer state into the moved log");
            }
        }
        let config = log.config().clone();
        // Durable before the current log is renamed away: from here a restart keeps it.
        log.close()?;
        let current = state.log.dir().to_path_buf();
        let source_root = current
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf);
        let doomed = source_root.join(delete_dir_name(&self.topic, self.index, Uuid::new_v4()));
        let target = future.root.join(format!("{}-{}", self.topic, self.index));
        rename_synced(&current, &doomed, &source_root)?;
        if let Err(e) = rename_synced(&future.dir, &target, &future.root) {
            if let Err(back) = rename_synced(&doomed, &current, &source_root) {
                tracing::error!(partition = ?self, dir = %doomed.display(), error = %back, "could not rename the current log back; it is loaded from the future log at the next start");
            }
            return Err(e.into());
        }
        let opened = PartitionLog::open(&target, config)?;
        let old = std::mem::replace(&mut state.log, opened);
        drop(old);
        {
            let mut moving = self.moving.lock();
            if moving
                .as_ref()
                .is_some_and(|m| std::ptr::eq(Arc::as_ptr(m), future))
            {
                *moving = None;
            }
        }
        drop(guard);
        drop(state);
        if let Err(e) = std::fs::remove_dir_all(&doomed) {
            tracing::warn!(dir = %doomed.display(), error = %e, "could not remove the moved replica's old log; it is removed at the next start");
        }
        tracing::info!(partition = ?self, dir = %target.display(), "replica moved to another log directory");
        Ok(true)
    }

    /// Drops a failed move and its copy.
    fn abandon(&self, future: &FutureLog) {
        {
            let mut moving = self.moving.lock();
            if moving
                .as_ref()
                .is_some_and(|m| std::ptr::eq(Arc::as_ptr(m), future))
            {
                *moving = None;
            }
        }
        future.log.lock().take();
        // A swap that failed half-way may have left the future as the only complete copy.
        let current = self.state.read().log.dir().to_path_buf();
        if current.exists() {
            remove_future_dir(&future.dir);
        }
    }
}

fn rename_synced(from: &Path, to: &Path, parent: &Path) -> Result<(), LogError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| LogError::from(IoError { op, path, source })
    };
    std::fs::rename(from, to).map_err(io("rename", from))?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", parent))?;
    Ok(())
}

fn remove_future_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a future log; it is removed at the next start");
        }
    }
}
