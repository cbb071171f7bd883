//! Cluster metadata on a single broker: the cluster id and the topics (id, partitions,
//! replication factor, config overrides), persisted atomically so a restart restores them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// File in the log directory holding the metadata snapshot.
const METADATA_FILE: &str = "cluster-metadata.json";

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("log directory {path} belongs to node {found}, not node {expected}")]
    WrongNode {
        path: PathBuf,
        found: i32,
        expected: i32,
    },
}

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Overrides of topic settings, by Kafka name; everything else comes from the broker.
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    cluster_id: String,
    node_id: i32,
    topics: Vec<TopicMeta>,
    /// Producer ids below this may have been handed out; a restart continues above it.
    #[serde(default)]
    producer_id_block_end: i64,
}

/// Producer ids reserved per metadata write, so allocating one rarely touches the disk.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// The metadata image and the file it is persisted to.
#[derive(Debug)]
pub struct MetadataStore {
    path: PathBuf,
    cluster_id: String,
    node_id: i32,
    topics: BTreeMap<String, TopicMeta>,
    next_producer_id: i64,
    producer_id_block_end: i64,
}

impl MetadataStore {
    /// Loads the metadata from `dir`, or starts a new cluster there with a fresh cluster id.
    pub fn open(dir: &Path, node_id: i32) -> Result<MetadataStore, MetadataError> {
        let path = dir.join(METADATA_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let snapshot: Snapshot =
                    serde_json::from_slice(&bytes).map_err(|source| MetadataError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                if snapshot.node_id != node_id {
                    return Err(MetadataError::WrongNode {
                        path,
                        found: snapshot.node_id,
                        expected: node_id,
                    });
                }
                let topics = snapshot
                    .topics
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect();
                Ok(MetadataStore {
                    path,
                    cluster_id: snapshot.cluster_id,
                    node_id,
                    topics,
                    next_producer_id: snapshot.producer_id_block_end,
                    producer_id_block_end: snapshot.producer_id_block_end,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let store = MetadataStore {
                    path,
                    cluster_id: new_cluster_id(),
                    node_id,
                    topics: BTreeMap::new(),
                    next_producer_id: 0,
                    producer_id_block_end: 0,
                };
                store.persist()?;
                Ok(store)
            }
            Err(source) => Err(MetadataError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    /// Adds or replaces a topic and persists the image before returning.
    pub fn put_topic(&mut self, topic: TopicMeta) -> Result<(), MetadataError> {
        let previous = self.topics.insert(topic.name.clone(), topic.clone());
        if let Err(e) = self.persist() {
            match previous {
                Some(p) => self.topics.insert(topic.name, p),
                None => self.topics.remove(&topic.name),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Removes a topic and persists the image before returning.
    pub fn remove_topic(&mut self, name: &str) -> Result<Option<TopicMeta>, MetadataError> {
        let Some(removed) = self.topics.remove(name) else {
            return Ok(None);
        };
        if let Err(e) = self.persist() {
            self.topics.insert(removed.name.clone(), removed);
            return Err(e);
        }
        Ok(Some(removed))
    }

    /// Hands out a producer id never given before, also across restarts.
    pub fn allocate_producer_id(&mut self) -> Result<i64, MetadataError> {
        if self.next_producer_id >= self.producer_id_block_end {
            self.producer_id_block_end = self.next_producer_id + PRODUCER_ID_BLOCK;
            if let Err(e) = self.persist() {
                self.producer_id_block_end = self.next_producer_id;
                return Err(e);
            }
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        Ok(id)
    }

    /// Writes the snapshot to a temporary file, fsyncs it and renames it over the old one,
    /// so a crash leaves either the old or the new image, never a torn one.
    fn persist(&self) -> Result<(), MetadataError> {
        let snapshot = Snapshot {
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
            topics: self.topics.values().cloned().collect(),
            producer_id_block_end: self.producer_id_block_end,
        };
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| MetadataError::Io {
                action,
                path,
                source,
            }
        };
        let bytes =
            serde_json::to_vec_pretty(&snapshot).map_err(|source| MetadataError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(&bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io("rename", &self.path))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync", dir))?;
        }
        Ok(())
    }
}

/// A cluster id in Kafka's form: a random UUID in URL-safe base64 without padding.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = Uuid::new_v4().as_u128();
    (0..22)
        .map(|i| {
            let shift = 128i32 - 6 * (i + 1);
            let sextet = if shift >= 0 {
                (bits >> shift) & 0x3f
            } else {
                (bits << -shift) & 0x3f
            };
            char::from(ALPHABET[sextet as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicMeta {
        TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        }
    }

    #[test]
    fn topics_and_the_cluster_id_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = MetadataStore::open(dir.path(), 0).expect("new");
        let id = store.cluster_id().to_string();
        assert_eq!(id.len(), 22);
        store.put_topic(topic("a")).expect("put");
        store.put_topic(topic("b")).expect("put");
        store.remove_topic("a").expect("remove");
        let reopened = MetadataStore::open(dir.path(), 0).expect("reopen");
        assert_eq!(reopened.cluster_id(), id);
        assert!(reopened.topic("a").is_none());
        assert_eq!(reopened.topic("b"), store.topic("b"));
    }

    #[test]
    fn producer_ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = MetadataStore::open(dir.path(), 0).expect("new");
        let first: Vec<i64> = (0..3)
            .map(|_| store.allocate_producer_id().expect("id"))
            .collect();
        assert_eq!(first, vec![0, 1, 2]);
        let mut reopened = MetadataStore::open(dir.path(), 0).expect("reopen");
        let next = reopened.allocate_producer_id().expect("id");
        assert!(next > 2, "{next} was handed out before the restart");
    }

    #[test]
    fn a_directory_of_another_node_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        MetadataStore::open(dir.path(), 0).expect("new");
        let err = MetadataStore::open(dir.path(), 7).expect_err("wrong node");
        assert!(err.to_string().contains("node 0"), "{err}");
    }

    #[test]
    fn a_corrupt_metadata_file_is_an_error_not_an_empty_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(METADATA_FILE), b"{ not json").expect("write");
        assert!(matches!(
            MetadataStore::open(dir.path(), 0),
            Err(MetadataError::Corrupt { .. })
        ));
    }
}
