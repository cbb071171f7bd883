//! Small per-partition checkpoint files holding one offset each: the log start offset and the
//! cleaner's first dirty offset; and the atomic replacement that every checkpoint, the
//! leader-epoch checkpoint of [`super::epoch`] included, is written with.
//!
//! On-disk format (text, so an operator can read and fix it; like Kafka's checkpoint files):
//!
//! ```text
//! 0            format version
//! 52311        the offset, decimal
//! ```
//!
//! Each line ends with `\n`. A checkpoint is replaced atomically and durably: written to
//! `<name>.tmp`, fsynced, renamed over `<name>`, and the directory fsynced, so a crash leaves
//! either the old or the new value, never a torn one. A leftover `.tmp` is removed on open.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::epoch::LEADER_EPOCH_FILE;
use super::error::{IoError, IoResultExt};
use super::segment::sync_dir;

/// The first offset a reader may see; offsets below it are deleted (retention,
/// DeleteRecords), even when the segment holding them is still on disk.
pub(crate) const LOG_START_OFFSET_FILE: &str = "log-start-offset.checkpoint";
/// The offset up to which the log was last compacted: everything below it is clean.
pub(crate) const CLEANER_OFFSET_FILE: &str = "cleaner-offset.checkpoint";

const VERSION: &str = "0";
const TMP_SUFFIX: &str = ".tmp";

/// Reads the offset saved in `dir/name`; `None` when there is no checkpoint. A file that does
/// not parse is reported and treated as absent: the fallbacks (the first segment's base, a
/// log that is all dirty) are safe, while refusing to open the partition would not be.
pub(crate) fn read(dir: &Path, name: &str) -> Result<Option<i64>, IoError> {
    let path = dir.join(name);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(file = %path.display(), "checkpoint is not text; ignoring it");
            return Ok(None);
        }
        Err(e) => return Err(e).at("read checkpoint", &path),
    };
    match parse(&text) {
        Ok(offset) => Ok(Some(offset)),
        Err(reason) => {
            tracing::warn!(file = %path.display(), %reason, "checkpoint does not parse; ignoring it");
            Ok(None)
        }
    }
}

fn parse(text: &str) -> Result<i64, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(VERSION) => {}
        Some(other) => return Err(format!("unknown version {other:?}")),
        None => return Err("empty file".to_owned()),
    }
    let offset = lines
        .next()
        .ok_or_else(|| "no offset line".to_owned())?
        .parse::<i64>()
        .map_err(|e| format!("bad offset: {e}"))?;
    if offset < 0 {
        return Err(format!("negative offset {offset}"));
    }
    if lines.any(|line| !line.is_empty()) {
        return Err("unexpected lines after the offset".to_owned());
    }
    Ok(offset)
}

/// Replaces `dir/name` with `offset`, durably (see the module docs).
pub(crate) fn write(dir: &Path, name: &str, offset: i64) -> Result<(), IoError> {
    replace(dir, name, &format!("{VERSION}\n{offset}\n"))
}

/// Replaces `dir/name` with `contents`, atomically and durably (see the module docs).
pub(crate) fn replace(dir: &Path, name: &str, contents: &str) -> Result<(), IoError> {
    let path = dir.join(name);
    let tmp = tmp_path(&path);
    let mut file = File::create(&tmp).at("create checkpoint", &tmp)?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .at("write checkpoint", &tmp)?;
    fs::rename(&tmp, &path).at("replace checkpoint", &path)?;
    sync_dir(dir)
}

/// Removes the temporary files of interrupted checkpoint writes.
pub(crate) fn remove_leftovers(dir: &Path) -> Result<(), IoError> {
    for name in [
        LOG_START_OFFSET_FILE,
        CLEANER_OFFSET_FILE,
        LEADER_EPOCH_FILE,
    ] {
        let tmp = tmp_path(&dir.join(name));
        match fs::remove_file(&tmp) {
            Ok(()) => tracing::info!(file = %tmp.display(), "removed an unfinished checkpoint"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at("remove unfinished checkpoint", &tmp),
        }
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    #[test]
    fn a_written_checkpoint_reads_back_and_a_missing_one_is_none() {
        let dir = TempDir::new().unwrap();
        assert_eq!(read(dir.path(), LOG_START_OFFSET_FILE).unwrap(), None);
        write(dir.path(), LOG_START_OFFSET_FILE, 52_311).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(LOG_START_OFFSET_FILE)).unwrap(),
            "0\n52311\n"
        );
        write(dir.path(), LOG_START_OFFSET_FILE, 60_000).unwrap();
        assert_eq!(
            read(dir.path(), LOG_START_OFFSET_FILE).unwrap(),
            Some(60_000)
        );
        assert!(!tmp_path(&dir.path().join(LOG_START_OFFSET_FILE)).exists());
    }

    #[test]
    fn a_garbled_checkpoint_is_ignored_rather_than_fatal() {
        let dir = TempDir::new().unwrap();
        for garbage in [
            &b""[..],
            b"0\n",
            b"1\n5\n",
            b"0\nfive\n",
            b"0\n-3\n",
            b"0\n5\n6\n",
            b"\xff\xfe",
        ] {
            fs::write(dir.path().join(CLEANER_OFFSET_FILE), garbage).unwrap();
            assert_eq!(
                read(dir.path(), CLEANER_OFFSET_FILE).unwrap(),
                None,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn leftover_temporary_checkpoints_are_removed() {
        let dir = TempDir::new().unwrap();
        let tmp = tmp_path(&dir.path().join(LOG_START_OFFSET_FILE));
        fs::write(&tmp, "0\n9").unwrap();
        remove_leftovers(dir.path()).unwrap();
        assert!(!tmp.exists());
    }
}
