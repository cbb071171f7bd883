//! The agent's Nodes: registered with their zone labels and capacity, kept alive by renewing
//! their Leases in `kube-node-lease` and refreshing their Ready condition, as a kubelet does.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::kube::sandbox::GATEWAY;

/// A node the agent runs pods for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// `topology.kubernetes.io/zone`.
    pub zone: String,
}

impl std::str::FromStr for NodeSpec {
    type Err = String;

    /// `name` or `name=zone`.
    fn from_str(text: &str) -> Result<NodeSpec, String> {
        let (name, zone) = text.split_once('=').unwrap_or((text, "zone-a"));
        if name.is_empty() || zone.is_empty() {
            return Err(format!("a node is NAME or NAME=ZONE, not {text:?}"));
        }
        Ok(NodeSpec {
            name: name.to_string(),
            zone: zone.to_string(),
        })
    }
}

const MANAGER: &str = "oxbow-node-agent";

fn ready_condition() -> serde_json::Value {
    let now = Timestamp::now().to_string();
    json!([
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "oxbow-node-agent is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
        {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "lastHeartbeatTime": now, "lastTransitionTime": now},
    ])
}

/// Creates (or takes over) the Node and marks it Ready.
pub async fn register(client: &Client, node: &NodeSpec) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let object = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": node.zone,
                "oxbow.dev/node-agent": "true",
            },
        },
    });
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&node.name, &params, &Patch::Apply(&object))
        .await?;
    update_status(client, node).await
}

async fn update_status(client: &Client, node: &NodeSpec) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let capacity =
        json!({"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": ready_condition(),
            "addresses": [
                {"type": "InternalIP", "address": GATEWAY.to_string()},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "",
                "containerRuntimeVersion": "oxbow://0.1.0",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.37.2",
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "oxbow node agent",
                "systemUUID": "",
            },
        }
    });
    api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Renews the node's Lease every 10 s and its Ready condition every 30 s, until cancelled.
pub async fn heartbeat(client: Client, node: NodeSpec) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut beats: u64 = 0;
    loop {
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(node.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.name.clone()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let params = PatchParams::apply(MANAGER).force();
        if let Err(error) = leases
            .patch(&node.name, &params, &Patch::Apply(&lease))
            .await
        {
            tracing::warn!(node = %node.name, "renewing the node lease: {error}");
        }
        if beats % 3 == 0 {
            if let Err(error) = update_status(&client, &node).await {
                tracing::warn!(node = %node.name, "updating the node status: {error:#}");
            }
        }
        beats += 1;
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
