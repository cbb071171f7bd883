//! A load balancer controller, as MetalLB or a cloud's would be: each Service of type
//! LoadBalancer (without a `loadBalancerClass` naming another controller) gets an address of
//! its own from [`LOAD_BALANCER_CIDR`], written into its status; [`super::dns`] then proxies
//! that address and the Service's ports to its ready endpoints.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

pub use crate::kube::sandbox::LOAD_BALANCER_CIDR;

/// The first address handed out: the `.1` of [`LOAD_BALANCER_CIDR`].
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
/// How many addresses are handed out (`.1` to `.253`: `.254` is the ingress controller's).
const ADDRESSES: u32 = 253;

/// Gives every LoadBalancer Service an address until cancelled.
pub async fn run(client: Client) {
    let (services, writer) = reflector::store::<Service>();
    let stream = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .boxed();
    futures::pin_mut!(stream);
    while stream.next().await.is_some() {
        if let Err(error) = assign(&client, &services).await {
            tracing::warn!("assigning load balancer addresses: {error}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn wants_address(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.is_none()
    })
}

/// The addresses a load balancer controller wrote into `service`'s status.
pub fn addresses(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok())
        .collect()
}

async fn assign(client: &Client, services: &Store<Service>) -> kube::Result<()> {
    let all = services.state();
    let mut taken: BTreeSet<IpAddr> = all
        .iter()
        .filter(|s| wants_address(s))
        .flat_map(|s| addresses(s))
        .collect();
    for service in all
        .iter()
        .filter(|s| wants_address(s) && addresses(s).is_empty())
    {
        let Some(address) = (0..ADDRESSES)
            .map(|i| IpAddr::V4(Ipv4Addr::from(u32::from(FIRST) + i)))
            .find(|a| !taken.contains(a))
        else {
            tracing::warn!(service = %service.name_any(), "no load balancer address left");
            continue;
        };
        let api: Api<Service> =
            Api::namespaced(client.clone(), &service.namespace().unwrap_or_default());
        let status = json!({
            "status": {"loadBalancer": {"ingress": [{"ip": address.to_string(), "ipMode": "VIP"}]}}
        });
        api.patch_status(
            &service.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
        taken.insert(address);
    }
    Ok(())
}
