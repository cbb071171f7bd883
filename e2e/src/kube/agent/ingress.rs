//! An ingress controller with TLS passthrough, as ingress-nginx run with
//! `--enable-ssl-passthrough`: every Ingress of class [`CLASS`] (or of none) annotated
//! `nginx.ingress.kubernetes.io/ssl-passthrough: "true"` has its hosts reached at
//! [`INGRESS_ADDRESS`] port 443, where each connection goes, by the server name of its TLS
//! handshake (SNI) and without TLS being terminated, to the port of the Service the host's rule
//! names, and its address goes into the Ingress's status. [`super::dns`] puts the hosts in the
//! hosts file.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub use crate::kube::sandbox::INGRESS_ADDRESS;

/// The IngressClass this controller serves.
pub const CLASS: &str = "nginx";
/// The annotation that asks for TLS passthrough.
const PASSTHROUGH: &str = "nginx.ingress.kubernetes.io/ssl-passthrough";
/// The port clients connect to.
const PORT: u16 = 443;
/// How long a client has to send its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where each host of a passthrough Ingress goes: (namespace, Service, port).
pub fn routes(ingresses: &Store<Ingress>) -> BTreeMap<String, (String, String, u16)> {
    let mut routes = BTreeMap::new();
    for ingress in ingresses.state() {
        let passthrough = ingress
            .annotations()
            .get(PASSTHROUGH)
            .is_some_and(|v| v == "true");
        let Some(spec) = ingress.spec.as_ref() else {
            continue;
        };
        let ours = spec
            .ingress_class_name
            .as_deref()
            .is_none_or(|class| class == CLASS);
        if !passthrough || !ours {
            continue;
        }
        let namespace = ingress.namespace().unwrap_or_default();
        for rule in spec.rules.iter().flatten() {
            let Some(host) = &rule.host else { continue };
            let backend = rule
                .http
                .as_ref()
                .and_then(|http| http.paths.first())
                .and_then(|path| path.backend.service.as_ref());
            let Some(service) = backend else { continue };
            let Some(port) = service
                .port
                .as_ref()
                .and_then(|p| p.number)
                .and_then(|n| u16::try_from(n).ok())
            else {
                continue;
            };
            routes.insert(
                host.clone(),
                (namespace.clone(), service.name.clone(), port),
            );
        }
    }
    routes
}

/// Writes [`INGRESS_ADDRESS`] into the status of every passthrough Ingress of [`CLASS`] that
/// lacks it, as ingress-nginx writes its own address.
pub async fn publish_address(client: &Client, ingresses: &Store<Ingress>) -> kube::Result<()> {
    let address = INGRESS_ADDRESS.to_string();
    for ingress in ingresses.state() {
        let has = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|all| {
                all.iter()
                    .any(|i| i.ip.as_deref() == Some(address.as_str()))
            });
        let routed = ingress
            .spec
            .as_ref()
            .and_then(|spec| spec.rules.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|rule| rule.host.as_ref())
            .any(|host| routes(ingresses).contains_key(host));
        if has || !routed {
            continue;
        }
        let api: Api<Ingress> =
            Api::namespaced(client.clone(), &ingress.namespace().unwrap_or_default());
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": address}]}}});
        api.patch_status(
            &ingress.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    }
    Ok(())
}

/// Serves [`INGRESS_ADDRESS`]:443 until the task is dropped.
pub async fn serve(ingresses: Store<Ingress>, services: Store<Service>) {
    let listen = SocketAddr::new(IpAddr::V4(INGRESS_ADDRESS), PORT);
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%listen, "the ingress controller cannot listen: {error}");
            return;
        }
    };
    loop {
        let Ok((inbound, peer)) = listener.accept().await else {
            continue;
        };
        let (ingresses, services) = (ingresses.clone(), services.clone());
        tokio::spawn(async move {
            if let Err(error) = pass_through(inbound, &ingresses, &services).await {
                tracing::info!(%peer, "ingress connection closed: {error:#}");
            }
        });
    }
}

async fn pass_through(
    mut inbound: TcpStream,
    ingresses: &Store<Ingress>,
    services: &Store<Service>,
) -> anyhow::Result<()> {
    let mut hello = [0u8; 5 + (1 << 14)];
    tokio::time::timeout(HELLO_TIMEOUT, inbound.read_exact(&mut hello[..5]))
        .await
        .context("no ClientHello in time")??;
    let length = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
    if hello[0] != HANDSHAKE || length > 1 << 14 {
        bail!("not a TLS handshake");
    }
    let record = &mut hello[..5 + length];
    tokio::time::timeout(HELLO_TIMEOUT, inbound.read_exact(&mut record[5..]))
        .await
        .context("no ClientHello in time")??;
    let name = server_name(record).context("a ClientHello without a server name")?;
    let (namespace, service, port) = routes(ingresses)
        .remove(&name)
        .with_context(|| format!("no passthrough Ingress for {name}"))?;
    let ip = services
        .get(&ObjectRef::new(&service).within(&namespace))
        .and_then(|s| s.spec.as_ref()?.cluster_ip.clone())
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .with_context(|| format!("Service {namespace}/{service} has no cluster IP"))?;
    let mut outbound = TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("connecting to Service {namespace}/{service} port {port}"))?;
    outbound.write_all(record).await?;
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

/// TLS record type of handshake messages.
const HANDSHAKE: u8 = 22;

/// The host name of the `server_name` extension of the ClientHello in TLS record `record`.
pub fn server_name(record: &[u8]) -> Option<String> {
    let body = record.get(5..)?;
    if *record.first()? != HANDSHAKE || *body.first()? != 1 {
        return None;
    }
    let u16_at = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *body.get(at)?,
            *body.get(at + 1)?,
        ])))
    };
    // Message type and length (4), client version (2), random (32).
    let mut at = 4 + 2 + 32;
    at += 1 + usize::from(*body.get(at)?);
    at += 2 + u16_at(at)?;
    at += 1 + usize::from(*body.get(at)?);
    let end = at + 2 + u16_at(at)?;
    at += 2;
    while at + 4 <= end {
        let (kind, length) = (u16_at(at)?, u16_at(at + 2)?);
        at += 4;
        if kind == 0 {
            // A list of (type, length, name); type 0 is a host name.
            let name_length = u16_at(at + 3)?;
            let name = body.get(at + 5..at + 5 + name_length)?;
            return (*body.get(at + 2)? == 0)
                .then(|| String::from_utf8(name.to_vec()).ok())
                .flatten();
        }
        at += length;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn client_hello(name: &str) -> Vec<u8> {
        // The provider named: with the workspace's features both ring and aws-lc-rs are in,
        // so there is no process default.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).expect("a name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(config), server).expect("a connection");
        let mut out = Vec::new();
        client.write_tls(&mut out).expect("a ClientHello");
        out
    }

    #[test]
    fn the_server_name_is_read_from_a_real_client_hello() {
        for name in ["broker-0.mtls.example.test", "b.example"] {
            assert_eq!(server_name(&client_hello(name)).as_deref(), Some(name));
        }
        let hello = client_hello("broker-0.mtls.example.test");
        for cut in [0, 5, 40, hello.len() / 2] {
            assert_eq!(server_name(&hello[..cut]), None, "cut at {cut}");
        }
        assert_eq!(server_name(b"\x16\x03\x01\x00\x00"), None);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n\r\n"), None);
    }
}
