//! The state machine: committed commands applied to the [`MetadataImage`], published to local
//! subscribers after every apply, and snapshotted to `snapshot.json`.
//!
//! The image is not persisted at each apply: at start it is rebuilt from the latest snapshot,
//! and openraft re-applies the committed entries after it from the log. A snapshot holds the
//! image, the last applied log id and the last membership, as JSON:
//! `{"version":1,"meta":{..},"image":{..}}`, replaced atomically (tmp + fsync + rename).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::store::write_atomically;
use super::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::controller::image::{CommandResult, MetadataImage};

const SNAPSHOT_FILE: &str = "snapshot.json";
const SNAPSHOT_VERSION: u32 = 1;

#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    version: u32,
    meta: &'a SnapshotMeta,
    image: &'a MetadataImage,
}

#[derive(Deserialize)]
struct SnapshotFile {
    version: u32,
    meta: SnapshotMeta,
    image: MetadataImage,
}

/// The latest snapshot, as on disk.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    image: Arc<MetadataImage>,
}

/// The current snapshot, shared by the state machine and its snapshot builders. Writes to the
/// file happen under its lock, so a build and an install never interleave.
#[derive(Clone)]
struct Snapshots {
    dir: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl Snapshots {
    /// Persists `snapshot` and makes it current, unless a newer one already is.
    async fn save(&self, snapshot: StoredSnapshot) -> io::Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut current = this.current.lock();
            if current
                .as_ref()
                .is_some_and(|c| c.meta.last_log_id > snapshot.meta.last_log_id)
            {
                return Ok(());
            }
            let bytes = serde_json::to_vec(&SnapshotFileRef {
                version: SNAPSHOT_VERSION,
                meta: &snapshot.meta,
                image: &snapshot.image,
            })
            .map_err(io::Error::other)?;
            write_atomically(&this.dir, &this.dir.join(SNAPSHOT_FILE), &bytes, true)?;
            *current = Some(snapshot);
            Ok(())
        })
        .await
        .map_err(|e| io::Error::other(format!("snapshot I/O task failed: {e}")))?
    }
}

/// Applies committed entries to the image. Owned by openraft once the node starts.
pub(crate) struct StateMachineStore {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    image: Arc<MetadataImage>,
    snapshots: Snapshots,
    publish: watch::Sender<Arc<MetadataImage>>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir` at its latest snapshot; the receiver sees the image
    /// after every apply.
    pub(crate) fn open(
        dir: &Path,
    ) -> io::Result<(StateMachineStore, watch::Receiver<Arc<MetadataImage>>)> {
        fs::create_dir_all(dir)?;
        let path = dir.join(SNAPSHOT_FILE);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        let _ = fs::remove_file(path.with_file_name(name));
        let stored = match fs::read(&path) {
            Ok(bytes) => {
                let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                if file.version != SNAPSHOT_VERSION {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: unknown snapshot version {}",
                            path.display(),
                            file.version
                        ),
                    ));
                }
                Some(StoredSnapshot {
                    meta: file.meta,
                    image: Arc::new(file.image),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (last_applied, last_membership, image) = match &stored {
            Some(s) => (
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
                s.image.clone(),
            ),
            None => (
                None,
                StoredMembership::default(),
                Arc::new(MetadataImage::default()),
            ),
        };
        let (publish, subscribe) = watch::channel(image.clone());
        let store = StateMachineStore {
            last_applied,
            last_membership,
            image,
            snapshots: Snapshots {
                dir: dir.to_path_buf(),
                current: Arc::new(Mutex::new(stored)),
            },
            publish,
        };
        Ok((store, subscribe))
    }
}

/// Builds a snapshot of the state as it was when the builder was made.
pub(crate) struct SnapshotBuilder {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    image: Arc<MetadataImage>,
    snapshots: Snapshots,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match self.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            image: self.image.clone(),
        };
        self.snapshots.save(stored).await.map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        tracing::info!(snapshot = %meta, "metadata snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new((*self.image).clone()),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Copy-on-write: subscribers keep the image they hold; the next one is cloned at most
        // once per batch.
        let image = Arc::make_mut(&mut self.image);
        let mut results = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Applied,
                EntryPayload::Normal(command) => image.apply(&command),
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResult::Applied
                }
            };
            results.push(result);
        }
        self.publish.send_replace(self.image.clone());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            image: self.image.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<MetadataImage>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<MetadataImage>,
    ) -> Result<(), StorageError> {
        let image = Arc::new(*snapshot);
        self.snapshots
            .save(StoredSnapshot {
                meta: meta.clone(),
                image: image.clone(),
            })
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
            })?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.image = image;
        self.publish.send_replace(self.image.clone());
        tracing::info!(snapshot = %meta, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self.snapshots.current.lock().clone();
        Ok(current.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new((*s.image).clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::controller::image::MetadataCommand;
    use crate::controller::raft::store::LogStore;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn command(index: u64, command: MetadataCommand) -> Entry {
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(command),
        }
    }

    fn membership(index: u64) -> Entry {
        let voters = BTreeSet::from([1, 2, 3]);
        let nodes: BTreeMap<u64, openraft::BasicNode> = voters
            .iter()
            .map(|id| {
                (
                    *id,
                    openraft::BasicNode::new(format!("127.0.0.1:{}", 9000 + id)),
                )
            })
            .collect();
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)),
        }
    }

    #[tokio::test]
    async fn apply_publishes_the_image_and_a_snapshot_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, mut images) = StateMachineStore::open(dir.path()).unwrap();
        let results = sm
            .apply([
                membership(0),
                command(
                    1,
                    MetadataCommand::InitCluster {
                        cluster_id: "c1".into(),
                    },
                ),
                command(2, MetadataCommand::AllocateProducerIds { count: 10 }),
                command(3, MetadataCommand::AllocateProducerIds { count: 5 }),
            ])
            .await
            .unwrap();
        assert_eq!(results[2], CommandResult::ProducerIds { first: 0 });
        assert_eq!(results[3], CommandResult::ProducerIds { first: 10 });
        assert!(images.has_changed().unwrap());
        assert_eq!(images.borrow_and_update().next_producer_id, 15);

        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id(1, 3)));
        assert_eq!(built.meta.last_membership.log_id(), &Some(log_id(1, 0)));
        sm.apply([command(
            4,
            MetadataCommand::AllocateProducerIds { count: 1 },
        )])
        .await
        .unwrap();
        drop(sm);

        // Reopened at the snapshot: entry 4 is re-applied from the log by openraft, not here.
        let (mut sm, images) = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(images.borrow().cluster_id, "c1");
        assert_eq!(images.borrow().next_producer_id, 15);
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 3)));
        assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1, 2, 3]);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, built.meta);
        assert_eq!(*current.snapshot, *built.snapshot);
    }

    #[tokio::test]
    async fn an_installed_snapshot_replaces_the_state_and_is_current() {
        let leader_dir = tempfile::tempdir().unwrap();
        let (mut leader, _) = StateMachineStore::open(leader_dir.path()).unwrap();
        leader
            .apply([
                membership(0),
                command(1, MetadataCommand::AllocateProducerIds { count: 7 }),
            ])
            .await
            .unwrap();
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let (mut follower, images) = StateMachineStore::open(dir.path()).unwrap();
        let mut data = follower.begin_receiving_snapshot().await.unwrap();
        *data = *snapshot.snapshot;
        follower
            .install_snapshot(&snapshot.meta, data)
            .await
            .unwrap();
        assert_eq!(images.borrow().next_producer_id, 7);
        assert_eq!(
            follower.applied_state().await.unwrap().0,
            Some(log_id(1, 1))
        );
        drop(follower);

        let (mut follower, images) = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(images.borrow().next_producer_id, 7);
        assert_eq!(
            follower.get_current_snapshot().await.unwrap().unwrap().meta,
            snapshot.meta
        );
    }

    /// Builds a fresh log store and state machine in a temporary directory for each test of
    /// openraft's storage suite; the directory lives as long as the guard.
    struct TempStores;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for TempStores {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let io = |e: io::Error| StorageError::from(StorageIOError::write(AnyError::new(&e)));
            let dir = tempfile::tempdir().map_err(io)?;
            let log = LogStore::open(&dir.path().join("log")).map_err(io)?;
            let (sm, _) = StateMachineStore::open(&dir.path().join("sm")).map_err(io)?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(TempStores).unwrap();
    }
}
