//! `oxbow-kube-up`: a Kubernetes cluster on this machine without Docker, for a person to try
//! the operator on: the control plane, the node agent, the operator installed with its Helm
//! chart and, unless `--no-example`, `examples/kafkacluster.yaml`. It prints how to reach the
//! cluster with kubectl and a Kafka client, and runs until Ctrl+C. Started by
//! `scripts/kube-up.sh`, which builds what it needs first.

use std::time::Duration;

use clap::Parser;
use oxbow_e2e::kube::env::{repository, EnvOptions, KubeEnv};
use oxbow_e2e::kube::sandbox;

#[derive(Debug, Parser)]
#[command(name = "oxbow-kube-up", about)]
struct Cli {
    /// Leave out examples/kafkacluster.yaml.
    #[arg(long)]
    no_example: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !sandbox::inside() {
        let exe = std::env::current_exe()?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let status = sandbox::run_inside(&exe, &args, &[])?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let env = KubeEnv::start(EnvOptions::default()).await?;
        if !cli.no_example {
            let example = std::fs::read_to_string(repository().join("examples/kafkacluster.yaml"))?;
            print!("{}", env.apply(&example)?);
        }
        let pid = std::process::id();
        println!("\nThe cluster runs in a private network namespace. In another terminal, enter it with\n");
        println!("    nsenter --target {pid} --net --mount");
        println!("    export KUBECONFIG={} PATH={}:$PATH", env.plane.kubeconfig.display(), env.plane.bin.display());
        println!("    kubectl get kafkaclusters,pods -A");
        println!("    kcat -L -b main-bootstrap.default.svc:9092");
        println!("\nLogs: {}. Ctrl+C stops everything.", env.dir.path().display());
        tokio::signal::ctrl_c().await?;
        println!("stopping");
        drop(env);
        tokio::time::sleep(Duration::from_millis(100)).await;
        anyhow::Ok(())
    })
}
