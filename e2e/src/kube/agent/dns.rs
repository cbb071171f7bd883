//! Cluster names and Service addresses inside the sandbox. The hosts file that the sandbox
//! mounts over `/etc/hosts` gets a line for each pod with a hostname and subdomain
//! (`main-0.main-brokers.ns.svc.cluster.local`), each Service with a cluster IP, and each
//! headless Service's ready pods. Each cluster IP and port has a TCP proxy to the Service's
//! ready endpoints (from its EndpointSlices), round robin, as kube-proxy's userspace mode did;
//! so has each node port of a NodePort Service, on the nodes' address (the gateway's), and each
//! port of a LoadBalancer Service on its load balancer's address. The hosts of passthrough
//! Ingresses name the ingress controller's address (see [`super::ingress`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client, ResourceExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::kube::sandbox::{CLUSTER_DOMAIN, GATEWAY, HOSTS_HEADER};

/// Keeps the hosts file and the Service proxies in step with the cluster until cancelled.
pub async fn run(client: Client, hosts_file: PathBuf) {
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let (ingresses, ingress_writer) = reflector::store::<Ingress>();
    let (tick, mut ticks) = tokio::sync::mpsc::channel::<()>(1);
    let watch = |stream: futures::stream::BoxStream<'static, ()>| {
        let tick = tick.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while stream.next().await.is_some() {
                let _ = tick.try_send(());
            }
        })
    };
    let pod_stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .map(|_| ())
        .boxed();
    let service_stream = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(service_writer)
    .map(|_| ())
    .boxed();
    let slice_stream = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(slice_writer)
    .map(|_| ())
    .boxed();
    let ingress_stream = watcher(
        Api::<Ingress>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(ingress_writer)
    .map(|_| ())
    .boxed();
    let _tasks = [
        watch(pod_stream),
        watch(service_stream),
        watch(slice_stream),
        watch(ingress_stream),
        tokio::spawn(super::ingress::serve(ingresses.clone(), services.clone())),
    ];
    let endpoints: Endpoints = Arc::new(Mutex::new(HashMap::new()));
    let mut proxies: BTreeMap<(IpAddr, u16), JoinHandle<()>> = BTreeMap::new();
    let mut written = String::new();
    while ticks.recv().await.is_some() {
        // Let a burst of changes settle into one rewrite.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let hosts = hosts_text(&pods, &services, &slices, &ingresses);
        if hosts != written {
            if let Err(error) = write_in_place(&hosts_file, &hosts) {
                tracing::warn!("writing the hosts file: {error}");
            } else {
                written = hosts;
            }
        }
        if let Err(error) = super::ingress::publish_address(&client, &ingresses).await {
            tracing::warn!("writing the ingress controller's address: {error}");
        }
        let wanted = service_ports(&services);
        if let Ok(mut table) = endpoints.lock() {
            table.clear();
            for service in services.state() {
                let key = (service.namespace().unwrap_or_default(), service.name_any());
                table.insert(key.clone(), ready_endpoints(&slices, &key.0, &key.1));
            }
        }
        proxies.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, target) in wanted {
            if proxies.contains_key(&key) {
                continue;
            }
            proxies.insert(
                key,
                tokio::spawn(proxy(SocketAddr::from(key), target, endpoints.clone())),
            );
        }
    }
}

/// Ready endpoints of each Service: (address, port name, port).
type Endpoints = Arc<Mutex<HashMap<(String, String), Vec<(IpAddr, String, u16)>>>>;

/// Which Service port (namespace, service, port name) each cluster IP and port is for.
type Target = (String, String, String);

fn service_ports(services: &Store<Service>) -> BTreeMap<(IpAddr, u16), Target> {
    let mut wanted = BTreeMap::new();
    for service in services.state() {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let target = (
                service.namespace().unwrap_or_default(),
                service.name_any(),
                port.name.clone().unwrap_or_default(),
            );
            // Every node forwards a NodePort Service's node port; the nodes all have the
            // gateway's address here.
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                wanted.insert((IpAddr::V4(GATEWAY), node_port), target.clone());
            }
            // A load balancer's address forwards the Service's ports.
            for address in super::loadbalancer::addresses(&service) {
                wanted.insert((address, number), target.clone());
            }
            wanted.insert((ip, number), target);
        }
    }
    wanted
}

fn ready_endpoints(
    slices: &Store<EndpointSlice>,
    namespace: &str,
    service: &str,
) -> Vec<(IpAddr, String, u16)> {
    let mut out = Vec::new();
    for slice in slices.state() {
        if slice.namespace().as_deref() != Some(namespace)
            || slice
                .labels()
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                != Some(service)
        {
            continue;
        }
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
            {
                for port in slice.ports.iter().flatten() {
                    if let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) {
                        out.push((address, port.name.clone().unwrap_or_default(), number));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn proxy(listen: SocketAddr, target: Target, endpoints: Endpoints) {
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%listen, "cannot listen for a Service: {error}");
            return;
        }
    };
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let candidates: Vec<SocketAddr> = endpoints
            .lock()
            .map(|table| {
                table
                    .get(&(target.0.clone(), target.1.clone()))
                    .into_iter()
                    .flatten()
                    .filter(|(_, name, _)| *name == target.2)
                    .map(|(ip, _, port)| SocketAddr::new(*ip, *port))
                    .collect()
            })
            .unwrap_or_default();
        if candidates.is_empty() {
            // No ready endpoint: the connection is refused, as with kube-proxy.
            continue;
        }
        let first = turn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            for attempt in 0..candidates.len() {
                let upstream = candidates[(first + attempt) % candidates.len()];
                let connect =
                    tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(upstream))
                        .await;
                if let Ok(Ok(mut outbound)) = connect {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
        });
    }
}

fn hosts_text(
    pods: &Store<Pod>,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    ingresses: &Store<Ingress>,
) -> String {
    let mut lines: BTreeSet<(IpAddr, String)> = BTreeSet::new();
    for pod in pods.state() {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
        else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let spec = pod.spec.as_ref();
        let hostname = spec.and_then(|s| s.hostname.clone());
        let subdomain = spec.and_then(|s| s.subdomain.clone());
        if let (Some(host), Some(sub)) = (hostname, subdomain) {
            let namespace = pod.namespace().unwrap_or_default();
            lines.insert((ip, format!("{host}.{sub}.{namespace}.svc.{CLUSTER_DOMAIN} {host}.{sub}.{namespace}.svc {host}.{sub}.{namespace}")));
        }
    }
    for service in services.state() {
        let namespace = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let names = format!(
            "{name}.{namespace}.svc.{CLUSTER_DOMAIN} {name}.{namespace}.svc {name}.{namespace}"
        );
        let cluster_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.clone());
        match cluster_ip.as_deref() {
            Some("None") => {
                for (ip, _, _) in ready_endpoints(slices, &namespace, &name) {
                    lines.insert((ip, names.clone()));
                }
            }
            Some(ip) => {
                if let Ok(ip) = ip.parse() {
                    lines.insert((ip, names));
                }
            }
            None => {}
        }
    }
    for host in super::ingress::routes(ingresses).into_keys() {
        lines.insert((IpAddr::V4(super::ingress::INGRESS_ADDRESS), host));
    }
    let mut text = HOSTS_HEADER.to_string();
    for (ip, names) in lines {
        text.push_str(&format!("{ip}\t{names}\n"));
    }
    text
}

/// Rewrites the file in place: it is bind-mounted, so a rename would leave the mount on the
/// old file.
fn write_in_place(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.flush()
}
