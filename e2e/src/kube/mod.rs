//! A real Kubernetes cluster for the operator's tests, on one machine without a container
//! engine: the control plane built from the Kubernetes sources (`scripts/k8s-tools.sh`), a
//! node agent that runs the pods scheduled to its nodes as real processes, each in its own
//! network namespace, and the sandbox all of it lives in.
//!
//! The sandbox is a private network and mount namespace (see [`sandbox`]): a bridge for the
//! pods' addresses, the Services' cluster IPs local to it, and a hosts file of its own in place
//! of `/etc/hosts` that gives pods and Services their `*.svc.cluster.local` names. Nothing in it
//! is reachable from outside, and nothing in it reaches out.

pub mod agent;
pub mod control_plane;
pub mod env;
pub mod load;
pub mod sandbox;
