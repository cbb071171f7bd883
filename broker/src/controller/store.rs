//! The metadata of a standalone broker (no quorum configured): the image, persisted
//! atomically after every command so a restart restores it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::watch;

use super::image::{CommandResult, MetadataCommand, MetadataImage};

/// File in the log directory holding the image.
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
}

/// A metadata log of one: commands apply at once and the image is written to disk before the
/// command counts as done.
pub struct StandaloneStore {
    path: PathBuf,
    image: Mutex<Stored>,
    published: watch::Sender<Arc<MetadataImage>>,
}

/// The file's contents: the image, and how many commands changed it (the length of the
/// metadata log this store stands for, which DescribeQuorum reports). Files written before
/// the count was kept hold the bare image; they read as a count of 0.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Stored {
    image: MetadataImage,
    changes: i64,
}

impl Stored {
    fn parse(bytes: &[u8]) -> Result<Stored, serde_json::Error> {
        serde_json::from_slice::<Stored>(bytes).or_else(|_| {
            serde_json::from_slice::<MetadataImage>(bytes).map(|image| Stored { image, changes: 0 })
        })
    }
}

impl StandaloneStore {
    /// Loads the image from `dir`, or starts an empty one.
    pub fn open(dir: &Path) -> Result<StandaloneStore, MetadataError> {
        let path = dir.join(METADATA_FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => Stored::parse(&bytes).map_err(|source| MetadataError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(source) => {
                return Err(MetadataError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        let (published, _) = watch::channel(Arc::new(stored.image.clone()));
        Ok(StandaloneStore {
            path,
            image: Mutex::new(stored),
            published,
        })
    }

    /// How many commands have changed the image: the offset after the last record of the
    /// metadata log this store stands for.
    pub fn changes(&self) -> i64 {
        self.image.lock().changes
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.published.subscribe()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.published.borrow())
    }

    /// Applies a command, persists the image, then publishes it. A command that cannot be
    /// persisted is undone.
    pub fn propose(&self, command: &MetadataCommand) -> Result<CommandResult, MetadataError> {
        let mut stored = self.image.lock();
        let before = stored.clone();
        let result = stored.image.apply(command);
        if stored.image != before.image {
            stored.changes += 1;
            if let Err(e) = persist(&self.path, &stored) {
                *stored = before;
                return Err(e);
            }
            self.published.send_replace(Arc::new(stored.image.clone()));
        }
        Ok(result)
    }
}

/// Writes the image to a temporary file, fsyncs it and renames it over the old one, so a
/// crash leaves either the old or the new image, never a torn one.
fn persist(path: &Path, stored: &Stored) -> Result<(), MetadataError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| MetadataError::Io {
            action,
            path,
            source,
        }
    };
    let bytes = serde_json::to_vec_pretty(stored).map_err(|source| MetadataError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(&bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn commands_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StandaloneStore::open(dir.path()).expect("new");
        store
            .propose(&MetadataCommand::InitCluster {
                cluster_id: "c".into(),
            })
            .expect("applied");
        store
            .propose(&MetadataCommand::CreateTopic {
                name: "t".into(),
                id: uuid::Uuid::nil(),
                configs: BTreeMap::new(),
                assignment: vec![vec![0]],
            })
            .expect("applied");
        let reopened = StandaloneStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.image(), store.image());
        assert_eq!(reopened.image().cluster_id, "c");
        assert_eq!(reopened.changes(), 2);
    }

    #[test]
    fn a_file_holding_the_bare_image_still_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = MetadataImage {
            cluster_id: "old".into(),
            ..MetadataImage::default()
        };
        let bytes = serde_json::to_vec(&image).expect("encode");
        std::fs::write(dir.path().join(METADATA_FILE), bytes).expect("write");
        let store = StandaloneStore::open(dir.path()).expect("open");
        assert_eq!(store.image().cluster_id, "old");
        assert_eq!(store.changes(), 0);
    }

    #[test]
    fn a_corrupt_metadata_file_is_an_error_not_an_empty_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(METADATA_FILE), b"{ not json").expect("write");
        assert!(matches!(
            StandaloneStore::open(dir.path()),
            Err(MetadataError::Corrupt { .. })
        ));
    }
}
