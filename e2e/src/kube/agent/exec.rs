//! What a container process is started through. The agent runs
//! `nsenter --net=<pod's namespace> -- unshare --mount --uts --propagation private --
//! oxbow-node-agent run-container <spec>`: in its own mount and UTS namespaces,
//! `run-container` bind-mounts the pod's volumes where the container mounts them, sets the
//! pod's hostname, makes the root filesystem read-only when the container asks, and `exec`s
//! the program as the container's user and group. The program then has the pod's address, its
//! files where the pod spec puts them, and nothing of another pod's.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use rustix::mount::MountFlags;
use serde::{Deserialize, Serialize};

/// One volume mount of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bind {
    /// The volume's directory or file on this machine.
    pub source: PathBuf,
    /// The container's mount path.
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything `run-container` needs, passed as one JSON argument. The environment is the
/// process's own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub binds: Vec<Bind>,
    pub hostname: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub working_dir: Option<PathBuf>,
    pub read_only_root: bool,
}

/// Sets up the namespaces this process was started in and replaces it with the program.
/// Returns only on failure.
pub fn run_container(spec: &ContainerSpec) -> anyhow::Error {
    match prepare(spec) {
        Ok(()) => {}
        Err(error) => return error,
    }
    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    if let Some(uid) = spec.uid {
        command.uid(uid);
    }
    if let Some(gid) = spec.gid.or(spec.uid) {
        command.gid(gid);
    }
    command.current_dir(spec.working_dir.as_deref().unwrap_or(Path::new("/")));
    let error = command.exec();
    anyhow::Error::new(error).context(format!("executing {}", spec.program.display()))
}

fn prepare(spec: &ContainerSpec) -> anyhow::Result<()> {
    rustix::system::sethostname(spec.hostname.as_bytes()).context("setting the pod's hostname")?;
    for bind in &spec.binds {
        if !bind.source.exists() {
            bail!("volume source {} does not exist", bind.source.display());
        }
        // The mount point must exist: an empty directory (or file) where the pod has one.
        if bind.source.is_dir() {
            std::fs::create_dir_all(&bind.target)
                .with_context(|| format!("creating mount point {}", bind.target.display()))?;
        } else if !bind.target.exists() {
            if let Some(parent) = bind.target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&bind.target, b"")
                .with_context(|| format!("creating mount point {}", bind.target.display()))?;
        }
        rustix::mount::mount_bind(&bind.source, &bind.target).with_context(|| {
            format!(
                "mounting {} on {}",
                bind.source.display(),
                bind.target.display()
            )
        })?;
        if bind.read_only {
            remount_read_only(&bind.target)?;
        }
    }
    if spec.read_only_root {
        remount_read_only(Path::new("/"))?;
    }
    Ok(())
}

fn remount_read_only(target: &Path) -> anyhow::Result<()> {
    rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
        .with_context(|| format!("making {} read-only", target.display()))
}
