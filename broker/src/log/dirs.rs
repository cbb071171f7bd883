//! The broker's log directories (`log.dirs`, JBOD): checked at start, each with its own
//! `meta.properties` as Kafka writes them; the partitions found in them; the moves between
//! them (AlterReplicaLogDirs) a crash interrupted, finished or dropped; and the directory a
//! new partition goes to.
//!
//! A directory holds, beside `meta.properties`, one directory per partition replica,
//! `<topic>-<partition>`, and two transient kinds: `<topic>-<partition>.<id>-delete`, a
//! replica being removed, and `<topic>-<partition>.<id>-future`, the copy a move is filling
//! in its destination. A move makes its future complete and durable before it renames the
//! current replica to `-delete`, then renames the future to `<topic>-<partition>`, so after
//! a crash:
//! - a future whose partition still has a current directory somewhere is an unfinished copy:
//!   it is removed and the move forgotten;
//! - a future whose partition has no current directory anywhere was complete when the swap
//!   began: it becomes the partition's directory;
//! - `-delete` directories are then removed.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use thiserror::Error;
use uuid::Uuid;

use super::error::{IoError, IoResultExt};
use super::segment::sync_dir;

/// Each log directory's identity file, as Kafka names it.
pub const META_PROPERTIES: &str = "meta.properties";
/// The `version` of `meta.properties` a KRaft node writes.
const META_VERSION: &str = "1";
const FUTURE_SUFFIX: &str = "-future";
const DELETE_SUFFIX: &str = "-delete";
/// Written and removed at start to find a directory the broker cannot write to.
const WRITE_PROBE: &str = "meta.properties.probe";

/// Why the log directories cannot be used; the broker does not start.
#[derive(Debug, Error)]
pub enum LogDirError {
    #[error("log directory {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot create log directory {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log directory {} is not writable: {source}", path.display())]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "log directories {} and {} are the same directory ({})",
        first.display(),
        second.display(),
        canonical.display()
    )]
    SameDirectory {
        first: PathBuf,
        second: PathBuf,
        canonical: PathBuf,
    },
    #[error(
        "partition {partition} has a log in two log directories, {} and {}; remove the one that is not wanted",
        first.display(),
        second.display()
    )]
    DuplicatePartition {
        partition: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}: {reason}", path.display())]
    MetaProperties { path: PathBuf, reason: String },
    #[error(transparent)]
    Io(#[from] IoError),
}

/// One directory of `log.dirs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDir {
    /// Absolute, as Kafka reports it (symbolic links are not resolved).
    pub path: PathBuf,
    /// The `directory.id` of its `meta.properties`.
    pub id: String,
}

/// The log directories, in the order of `log.dirs`.
#[derive(Debug)]
pub struct LogDirs {
    dirs: Vec<LogDir>,
    node_id: i32,
    /// The `cluster.id` the directories' `meta.properties` name, when any does.
    stored_cluster_id: Option<String>,
    /// The positions of the directories an I/O error took offline; they stay offline until
    /// the broker restarts.
    offline: parking_lot::Mutex<std::collections::BTreeSet<usize>>,
}

impl LogDirs {
    /// Checks and prepares the directories of `log.dirs` for node `node_id`: each is created
    /// if missing and must be a writable directory, no two may be the same directory, and
    /// every `meta.properties` found must name this node and one cluster. Moves a crash
    /// interrupted are finished or dropped, and removed replicas' leftovers deleted.
    pub fn open(paths: &[PathBuf], node_id: i32) -> Result<LogDirs, LogDirError> {
        let mut dirs: Vec<LogDir> = Vec::with_capacity(paths.len());
        let mut canonical: Vec<PathBuf> = Vec::with_capacity(paths.len());
        let mut stored_cluster_id: Option<(String, PathBuf)> = None;
        for given in paths {
            let path = std::path::absolute(given)
                .map(|p| crate::config::normalize_path(&p))
                .map_err(|source| LogDirError::Create {
                    path: given.clone(),
                    source,
                })?;
            if path.exists() && !path.is_dir() {
                return Err(LogDirError::NotADirectory { path });
            }
            fs::create_dir_all(&path).map_err(|source| LogDirError::Create {
                path: path.clone(),
                source,
            })?;
            let real = fs::canonicalize(&path).at("resolve log directory", &path)?;
            if let Some(i) = canonical.iter().position(|c| *c == real) {
                return Err(LogDirError::SameDirectory {
                    first: dirs[i].path.clone(),
                    second: path,
                    canonical: real,
                });
            }
            probe_writable(&path)?;
            let meta = read_meta(&path)?;
            let id = match &meta {
                Some(meta) => {
                    if meta.node_id != node_id {
                        return Err(LogDirError::MetaProperties {
                            path: path.join(META_PROPERTIES),
                            reason: format!(
                                "stored node.id {} does not match node.id {node_id} of this broker",
                                meta.node_id
                            ),
                        });
                    }
                    if let Some((cluster, first)) = &stored_cluster_id {
                        if *cluster != meta.cluster_id {
                            return Err(LogDirError::MetaProperties {
                                path: path.join(META_PROPERTIES),
                                reason: format!(
                                    "cluster.id {} differs from {cluster} in {}",
                                    meta.cluster_id,
                                    first.join(META_PROPERTIES).display()
                                ),
                            });
                        }
                    } else {
                        stored_cluster_id = Some((meta.cluster_id.clone(), path.clone()));
                    }
                    if dirs.iter().any(|d| d.id == meta.directory_id) {
                        return Err(LogDirError::MetaProperties {
                            path: path.join(META_PROPERTIES),
                            reason: format!(
                                "directory.id {} is also another log directory's",
                                meta.directory_id
                            ),
                        });
                    }
                    meta.directory_id.clone()
                }
                None => new_kafka_uuid(),
            };
            canonical.push(real);
            dirs.push(LogDir { path, id });
        }
        let dirs = LogDirs {
            dirs,
            node_id,
            stored_cluster_id: stored_cluster_id.map(|(id, _)| id),
            offline: parking_lot::Mutex::new(std::collections::BTreeSet::new()),
        };
        dirs.finish_interrupted_moves()?;
        Ok(dirs)
    }

    pub fn dirs(&self) -> &[LogDir] {
        &self.dirs
    }

    /// The directory holding the cluster metadata: the first of `log.dirs`, as in Kafka
    /// without `metadata.log.dir`.
    pub fn metadata_dir(&self) -> &Path {
        self.dirs
            .first()
            .map_or(Path::new("."), |d| d.path.as_path())
    }

    /// The directory of `log.dirs` that `path` names (spelled as a client may: compared
    /// after making both absolute and normal), if any.
    pub fn find(&self, path: &Path) -> Option<&LogDir> {
        let wanted = std::path::absolute(path)
            .map(|p| crate::config::normalize_path(&p))
            .ok()?;
        self.dirs.iter().find(|d| d.path == wanted)
    }

    /// The position in `log.dirs` of log directory `root` (as [`LogDir::path`]).
    pub fn position(&self, root: &Path) -> Option<usize> {
        self.dirs.iter().position(|d| d.path == root)
    }

    /// The position of the directory holding `path` (a file of a replica, or the directory
    /// itself), if any.
    pub fn containing(&self, path: &Path) -> Option<usize> {
        self.dirs
            .iter()
            .enumerate()
            .filter(|(_, d)| path.starts_with(&d.path))
            .max_by_key(|(_, d)| d.path.as_os_str().len())
            .map(|(i, _)| i)
    }

    /// Takes directory `index` offline; `false` when it already was.
    pub fn take_offline(&self, index: usize) -> bool {
        index < self.dirs.len() && self.offline.lock().insert(index)
    }

    pub fn is_online(&self, index: usize) -> bool {
        !self.offline.lock().contains(&index)
    }

    /// How many directories are offline.
    pub fn offline_count(&self) -> usize {
        self.offline.lock().len()
    }

    /// Writes, syncs and removes a small file in each online directory, so a directory that
    /// fails while nothing writes to it is found out: the failures, by position.
    pub fn probe(&self) -> Vec<(usize, IoError)> {
        self.dirs
            .iter()
            .enumerate()
            .filter(|(i, _)| self.is_online(*i))
            .filter_map(|(i, dir)| {
                let probe = dir.path.join(WRITE_PROBE);
                fs::File::create(&probe)
                    .and_then(|mut f| f.write_all(b"probe").and_then(|()| f.sync_all()))
                    .and_then(|()| fs::remove_file(&probe))
                    .at("probe log directory", &dir.path)
                    .err()
                    .map(|e| (i, e))
            })
            .collect()
    }

    /// Writes each directory's `meta.properties` for `cluster_id`, once the cluster is known;
    /// refuses directories that belong to another cluster.
    pub fn write_meta(&self, cluster_id: &str) -> Result<(), LogDirError> {
        if let Some(stored) = &self.stored_cluster_id {
            if stored != cluster_id {
                return Err(LogDirError::MetaProperties {
                    path: self.metadata_dir().join(META_PROPERTIES),
                    reason: format!(
                        "stored cluster.id {stored} does not match the cluster's id {cluster_id}"
                    ),
                });
            }
        }
        for dir in &self.dirs {
            let text = meta_text(cluster_id, &dir.id, self.node_id);
            let file = dir.path.join(META_PROPERTIES);
            if fs::read_to_string(&file).is_ok_and(|found| found == text) {
                continue;
            }
            let tmp = dir.path.join(format!("{META_PROPERTIES}.tmp"));
            fs::File::create(&tmp)
                .and_then(|mut f| {
                    f.write_all(text.as_bytes())?;
                    f.sync_all()
                })
                .at("write", &tmp)?;
            fs::rename(&tmp, &file).at("rename into place", &file)?;
            sync_dir(&dir.path)?;
        }
        Ok(())
    }

    /// Every partition directory in the log directories, with the position in `log.dirs`
    /// of the directory holding it. A partition in two directories is an error: which copy
    /// is right cannot be known, so none is picked.
    pub fn scan(&self) -> Result<HashMap<(String, i32), usize>, LogDirError> {
        let mut found: HashMap<(String, i32), usize> = HashMap::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            for (name, _) in entries(&dir.path)? {
                let Some(key) = parse_partition_dir(&name) else {
                    continue;
                };
                if let Some(first) = found.insert(key.clone(), i) {
                    return Err(LogDirError::DuplicatePartition {
                        partition: format!("{}-{}", key.0, key.1),
                        first: self.dirs[first].path.join(&name),
                        second: dir.path.join(&name),
                    });
                }
            }
        }
        Ok(found)
    }

    /// Finishes the swaps a crash interrupted and drops unfinished copies (see the module
    /// documentation), then removes the `-delete` leftovers.
    fn finish_interrupted_moves(&self) -> Result<(), LogDirError> {
        let mut current: HashMap<String, PathBuf> = HashMap::new();
        let mut futures: Vec<(String, PathBuf, &LogDir)> = Vec::new();
        for dir in &self.dirs {
            for (name, path) in entries(&dir.path)? {
                if parse_partition_dir(&name).is_some() {
                    current.insert(name, path);
                } else if let Some(partition) = transient_of(&name, FUTURE_SUFFIX) {
                    futures.push((partition.to_string(), path, dir));
                }
            }
        }
        for (partition, future, dir) in futures {
            if let Some(existing) = current.get(&partition) {
                tracing::warn!(future = %future.display(), current = %existing.display(), "dropping the unfinished copy of an interrupted log directory move");
                fs::remove_dir_all(&future).at("remove unfinished future log", &future)?;
            } else {
                let target = dir.path.join(&partition);
                tracing::info!(future = %future.display(), "finishing an interrupted log directory move");
                fs::rename(&future, &target).at("rename future log into place", &target)?;
                sync_dir(&dir.path)?;
                current.insert(partition, target);
            }
        }
        for dir in &self.dirs {
            for (name, path) in entries(&dir.path)? {
                if transient_of(&name, DELETE_SUFFIX).is_some() {
                    if let Err(e) = fs::remove_dir_all(&path) {
                        tracing::warn!(dir = %path.display(), error = %e, "could not remove a deleted partition");
                    }
                }
            }
        }
        Ok(())
    }
}

/// The position in `counts` (partitions per log directory, in `log.dirs` order) of the
/// directory a new partition goes to: the one with the fewest, the first of those on a tie
/// (Kafka's rule for new logs).
pub fn place(counts: &[usize]) -> usize {
    counts
        .iter()
        .enumerate()
        .min_by_key(|(i, count)| (**count, *i))
        .map_or(0, |(i, _)| i)
}

/// `<topic>-<partition>.<id>-future`: where a move to another log directory copies to.
pub fn future_dir_name(topic: &str, partition: i32) -> String {
    format!(
        "{topic}-{partition}.{}{FUTURE_SUFFIX}",
        Uuid::new_v4().simple()
    )
}

/// `<topic>-<partition>.<id>-delete`: a replica's directory being removed.
pub fn delete_dir_name(topic: &str, partition: i32, id: Uuid) -> String {
    format!("{topic}-{partition}.{}{DELETE_SUFFIX}", id.simple())
}

/// The topic and partition of a partition directory's name, `<topic>-<partition>`.
pub fn parse_partition_dir(name: &str) -> Option<(String, i32)> {
    let (topic, digits) = name.rsplit_once('-')?;
    let index: i32 = digits.parse().ok()?;
    if index < 0 || digits != index.to_string() {
        return None;
    }
    crate::config::validate_topic_name(topic).ok()?;
    Some((topic.to_string(), index))
}

/// `<topic>-<partition>` of a transient directory `<topic>-<partition>.<id><suffix>`.
fn transient_of<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let (partition, id) = name.strip_suffix(suffix)?.rsplit_once('.')?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    parse_partition_dir(partition).map(|_| partition)
}

/// The directories in `dir`: name and path.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, IoError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at("list log directory", dir)? {
        let entry = entry.at("list log directory", dir)?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), path));
        }
    }
    Ok(out)
}

fn probe_writable(dir: &Path) -> Result<(), LogDirError> {
    let probe = dir.join(WRITE_PROBE);
    fs::File::create(&probe)
        .and_then(|mut f| f.write_all(b"probe"))
        .and_then(|()| fs::remove_file(&probe))
        .map_err(|source| LogDirError::NotWritable {
            path: dir.to_path_buf(),
            source,
        })
}

/// What a `meta.properties` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MetaProperties {
    cluster_id: String,
    node_id: i32,
    directory_id: String,
}

fn read_meta(dir: &Path) -> Result<Option<MetaProperties>, LogDirError> {
    let path = dir.join(META_PROPERTIES);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IoError {
                op: "read",
                path,
                source,
            }
            .into())
        }
    };
    parse_meta(&text)
        .map(Some)
        .map_err(|reason| LogDirError::MetaProperties { path, reason })
}

fn parse_meta(text: &str) -> Result<MetaProperties, String> {
    let parsed = crate::config::properties::parse(text, META_PROPERTIES)
        .map_err(|e| e.to_string())?
        .values;
    let field = |key: &str| {
        parsed
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("no {key}"))
    };
    let version = field("version")?;
    if version != META_VERSION {
        return Err(format!(
            "version {version} is not a KRaft node's ({META_VERSION})"
        ));
    }
    let node_id = field("node.id")?;
    Ok(MetaProperties {
        cluster_id: field("cluster.id")?,
        node_id: node_id
            .parse()
            .map_err(|_| format!("node.id {node_id} is not a number"))?,
        // Kafka before KIP-858 wrote none; one is given then.
        directory_id: field("directory.id").unwrap_or_else(|_| new_kafka_uuid()),
    })
}

/// `meta.properties` as Kafka writes it (Java properties, keys sorted).
fn meta_text(cluster_id: &str, directory_id: &str, node_id: i32) -> String {
    format!(
        "#\n#Written by oxbow-broker\ncluster.id={cluster_id}\ndirectory.id={directory_id}\nnode.id={node_id}\nversion={META_VERSION}\n"
    )
}

/// A new Kafka `Uuid` in its text form: 16 random bytes in URL-safe base64, unpadded.
pub(crate) fn new_kafka_uuid() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_partition_goes_to_the_directory_with_the_fewest_first_on_a_tie() {
        assert_eq!(place(&[0, 0, 0]), 0);
        assert_eq!(place(&[1, 0, 0]), 1);
        assert_eq!(place(&[1, 1, 0]), 2);
        assert_eq!(place(&[3, 2, 2]), 1);
        assert_eq!(place(&[5]), 0);
        // Filling three empty directories one at a time spreads evenly, in order.
        let mut counts = vec![0; 3];
        let order: Vec<usize> = (0..7)
            .map(|_| {
                let i = place(&counts);
                counts[i] += 1;
                i
            })
            .collect();
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn partition_directories_are_told_from_transient_and_other_ones() {
        assert_eq!(
            parse_partition_dir("orders-3"),
            Some(("orders".to_string(), 3))
        );
        assert_eq!(
            parse_partition_dir("my-topic.v2-10"),
            Some(("my-topic.v2".to_string(), 10))
        );
        for name in [
            "__cluster_metadata",
            "orders",
            "orders-+1",
            "orders-03",
            "-3",
            "orders-3.0123456789abcdef0123456789abcdef-delete",
            "orders-3.0123456789abcdef0123456789abcdef-future",
        ] {
            assert_eq!(parse_partition_dir(name), None, "{name}");
        }
        let future = future_dir_name("orders", 3);
        assert_eq!(transient_of(&future, FUTURE_SUFFIX), Some("orders-3"));
        let delete = delete_dir_name("orders", 3, Uuid::new_v4());
        assert_eq!(transient_of(&delete, DELETE_SUFFIX), Some("orders-3"));
        assert_eq!(transient_of(&delete, FUTURE_SUFFIX), None);
    }

    #[test]
    fn meta_properties_round_trip_and_refuse_a_zookeeper_era_file() {
        let text = meta_text("abc", "dir-id", 4);
        assert_eq!(
            parse_meta(&text),
            Ok(MetaProperties {
                cluster_id: "abc".to_string(),
                node_id: 4,
                directory_id: "dir-id".to_string()
            })
        );
        let old = "version=0\nbroker.id=1\ncluster.id=abc\n";
        assert!(parse_meta(old).is_err_and(|e| e.contains("version 0")));
        assert_eq!(new_kafka_uuid().len(), 22);
    }

    fn open(paths: &[PathBuf], node: i32) -> Result<LogDirs, LogDirError> {
        LogDirs::open(paths, node)
    }

    #[test]
    fn directories_are_checked_at_start() {
        let root = tempfile::tempdir().expect("a directory");
        let file = root.path().join("file");
        fs::write(&file, b"x").expect("a file");
        let err = open(&[root.path().join("a"), file.clone()], 1).expect_err("a file");
        assert!(matches!(err, LogDirError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains("is not a directory"), "{err}");

        let a = root.path().join("a");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&a, &link).expect("a link");
        let err = open(&[a.clone(), link], 1).expect_err("the same directory");
        assert!(matches!(err, LogDirError::SameDirectory { .. }), "{err}");

        let b = root.path().join("b");
        let dirs = open(&[a.clone(), b.clone()], 1).expect("two directories");
        dirs.write_meta("cluster-1").expect("written");
        let written = fs::read_to_string(a.join(META_PROPERTIES)).expect("meta.properties");
        assert!(written.contains("cluster.id=cluster-1\n"), "{written}");
        assert!(written.contains("node.id=1\n"), "{written}");
        assert!(written.contains(&format!("directory.id={}\n", dirs.dirs()[0].id)));
        assert_ne!(dirs.dirs()[0].id, dirs.dirs()[1].id);

        let again = open(&[a.clone(), b.clone()], 1).expect("reopened");
        assert_eq!(again.dirs(), dirs.dirs(), "ids are kept");
        let err = again.write_meta("cluster-2").expect_err("another cluster");
        assert!(err.to_string().contains("cluster-1"), "{err}");

        let err = open(&[a.clone(), b.clone()], 2).expect_err("another node");
        assert!(err.to_string().contains("node.id 1"), "{err}");

        fs::write(b.join(META_PROPERTIES), meta_text("cluster-9", "x", 1)).expect("write");
        let err = open(&[a, b], 1).expect_err("two clusters");
        assert!(err.to_string().contains("cluster-9"), "{err}");
    }

    #[test]
    fn a_partition_in_two_directories_is_refused() {
        let root = tempfile::tempdir().expect("a directory");
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        fs::create_dir_all(a.join("t-0")).expect("dir");
        fs::create_dir_all(b.join("t-1")).expect("dir");
        let dirs = open(&[a.clone(), b.clone()], 0).expect("opened");
        let found = dirs.scan().expect("no duplicate");
        assert_eq!(found.get(&("t".to_string(), 0)), Some(&0));
        assert_eq!(found.get(&("t".to_string(), 1)), Some(&1));
        fs::create_dir_all(b.join("t-0")).expect("dir");
        let err = dirs.scan().expect_err("t-0 twice");
        assert!(
            matches!(err, LogDirError::DuplicatePartition { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("t-0"), "{err}");
    }

    #[test]
    fn an_interrupted_move_is_dropped_before_the_swap_and_finished_after_it() {
        let root = tempfile::tempdir().expect("a directory");
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        // Copy unfinished: the current log is still there.
        fs::create_dir_all(a.join("t-0")).expect("dir");
        let unfinished = b.join(future_dir_name("t", 0));
        fs::create_dir_all(&unfinished).expect("dir");
        // Swap begun: the current log was renamed for deletion.
        fs::create_dir_all(a.join(delete_dir_name("t", 1, Uuid::new_v4()))).expect("dir");
        let complete = b.join(future_dir_name("t", 1));
        fs::create_dir_all(&complete).expect("dir");
        fs::write(complete.join("00000000000000000000.log"), b"").expect("a segment");
        let dirs = open(&[a.clone(), b.clone()], 0).expect("opened");
        assert!(!unfinished.exists());
        assert!(!complete.exists());
        assert!(b.join("t-1").join("00000000000000000000.log").exists());
        let found = dirs.scan().expect("one copy each");
        assert_eq!(found.len(), 2);
        assert_eq!(found.get(&("t".to_string(), 0)), Some(&0));
        assert_eq!(found.get(&("t".to_string(), 1)), Some(&1));
        let left: Vec<String> = entries(&a)
            .expect("listed")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, vec!["t-0".to_string()], "the deleted log is removed");
    }
}
