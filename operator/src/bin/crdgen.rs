//! Writes the CRDs to `crds/` and `charts/oxbow/crds/`.
//!
//! `--stdout` prints them instead; `--cluster FILE` prints the objects the operator would
//! create for the KafkaCluster manifest in FILE, so their schema can be checked offline.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use oxbow_operator::cluster::manifests;
use oxbow_operator::cluster::validate::OperatorSettings;
use oxbow_operator::crd::KafkaCluster;
use oxbow_operator::crdgen::{render, CRD_DIRS};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => write_crds(),
        ["--stdout"] => {
            for (_, yaml) in render().context("rendering the CRDs")? {
                print!("---\n{yaml}");
            }
            Ok(())
        }
        ["--cluster", file] => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
            let cluster: KafkaCluster = serde_yaml::from_str(&text)
                .with_context(|| format!("{file} is not a KafkaCluster"))?;
            let yaml = manifests(cluster, &OperatorSettings::default())
                .map_err(|problems| anyhow::anyhow!("{file}: {problems}"))?;
            print!("{yaml}");
            Ok(())
        }
        _ => bail!("usage: crdgen [--stdout | --cluster FILE]"),
    }
}

fn write_crds() -> anyhow::Result<()> {
    let files = render().context("rendering the CRDs")?;
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in CRD_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, yaml) in &files {
            let path = dir.join(name);
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
