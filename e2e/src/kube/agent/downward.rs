//! The downward API: a pod's own fields as environment variables and files, and the
//! `$(VAR)` references Kubernetes expands in commands, arguments and values.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::bail;
use k8s_openapi::api::core::v1::Pod;

use crate::kube::sandbox::GATEWAY;

/// The value of a `fieldRef` path for `pod`, whose address is `address`.
pub fn field(pod: &Pod, address: Ipv4Addr, path: &str) -> anyhow::Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(address.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(GATEWAY.to_string()),
        "metadata.labels" => Some(render_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(render_map(meta.annotations.as_ref())),
        other => {
            if let Some(key) = bracketed(other, "metadata.labels") {
                Some(
                    meta.labels
                        .as_ref()
                        .and_then(|m| m.get(key).cloned())
                        .unwrap_or_default(),
                )
            } else if let Some(key) = bracketed(other, "metadata.annotations") {
                Some(
                    meta.annotations
                        .as_ref()
                        .and_then(|m| m.get(key).cloned())
                        .unwrap_or_default(),
                )
            } else {
                bail!("unsupported downward API field {other:?}")
            }
        }
    };
    Ok(value.unwrap_or_default())
}

fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

fn render_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    })
    .unwrap_or_default()
}

/// Expands `$(NAME)` with the variables defined so far; `$$` is a literal `$`, and a reference
/// to an undefined variable stays as written, as Kubernetes does.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("$(") {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_kubernetes() {
        let vars = BTreeMap::from([("POD_NAME".to_string(), "main-0".to_string())]);
        assert_eq!(
            expand("/etc/oxbow/$(POD_NAME).properties", &vars),
            "/etc/oxbow/main-0.properties"
        );
        assert_eq!(
            expand("$(MISSING)-$$(POD_NAME)-$", &vars),
            "$(MISSING)-$(POD_NAME)-$"
        );
        assert_eq!(expand("$(UNCLOSED", &vars), "$(UNCLOSED");
    }
}
