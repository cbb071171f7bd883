//! Quorums of real nodes on 127.0.0.1: elections, forwarding, learners, failover, restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{NodeId, QuorumError, RaftConfig, RaftQuorum, RaftTuning};
use crate::controller::image::{CommandResult, MetadataCommand, MetadataImage};

const WAIT: Duration = Duration::from_secs(15);

/// Addresses on 127.0.0.1 that were free a moment ago.
fn free_addrs(n: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

fn config(
    node_id: NodeId,
    voters: &BTreeMap<NodeId, String>,
    addr: &str,
    dir: &Path,
) -> RaftConfig {
    RaftConfig::new(
        node_id,
        voters.clone(),
        addr,
        addr,
        dir.join(format!("node-{node_id}")),
    )
}

async fn start(config: RaftConfig) -> RaftQuorum {
    RaftQuorum::start(config, CancellationToken::new())
        .await
        .unwrap()
}

/// Waits until `ready` holds, failing the test after `WAIT`.
async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node knows the same leader, and returns it.
async fn agreed_leader(nodes: &[&RaftQuorum]) -> NodeId {
    wait_for("a leader every node knows", || {
        let first = nodes[0].leader();
        first.is_some() && nodes.iter().all(|n| n.leader() == first)
    })
    .await;
    nodes[0].leader().unwrap()
}

async fn wait_image(node: &RaftQuorum, what: &str, check: impl Fn(&MetadataImage) -> bool) {
    wait_for(what, || check(&node.image())).await;
}

fn allocate(count: i64) -> MetadataCommand {
    MetadataCommand::AllocateProducerIds { count }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_leads_within_a_second_and_applies_its_proposals() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addrs(1).remove(0);
    let voters = BTreeMap::from([(1, addr.clone())]);
    let started = Instant::now();
    let node = start(config(1, &voters, &addr, dir.path())).await;
    wait_for("node 1 to lead", || node.is_leader()).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a lone voter took {:?} to lead",
        started.elapsed()
    );

    let mut images = node.subscribe();
    let result = node
        .propose(MetadataCommand::InitCluster {
            cluster_id: "solo".into(),
        })
        .await
        .unwrap();
    assert_eq!(result, CommandResult::Applied);
    assert_eq!(
        node.propose(allocate(10)).await.unwrap(),
        CommandResult::ProducerIds { first: 0 }
    );
    assert_eq!(
        node.propose(allocate(10)).await.unwrap(),
        CommandResult::ProducerIds { first: 10 }
    );
    assert_eq!(node.image().cluster_id, "solo");
    assert_eq!(node.image().next_producer_id, 20);
    assert!(images.has_changed().unwrap());
    assert_eq!(images.borrow_and_update().next_producer_id, 20);
    node.shutdown().await;
    assert!(matches!(
        node.propose(allocate(1)).await,
        Err(QuorumError::ShutDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_a_leader_and_a_follower_forwards_proposals() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let voters: BTreeMap<NodeId, String> = (1..=3).zip(addrs.iter().cloned()).collect();
    let mut nodes = Vec::new();
    for (id, addr) in &voters {
        nodes.push(start(config(*id, &voters, addr, dir.path())).await);
    }
    let all: Vec<&RaftQuorum> = nodes.iter().collect();
    let leader = agreed_leader(&all).await;
    assert_eq!(nodes.iter().filter(|n| n.is_leader()).count(), 1);

    let follower = nodes.iter().find(|n| n.node_id() != leader).unwrap();
    let result = follower
        .propose(MetadataCommand::InitCluster {
            cluster_id: "three".into(),
        })
        .await
        .unwrap();
    assert_eq!(result, CommandResult::Applied);
    // Applied where it was proposed by the time `propose` returns...
    assert_eq!(follower.image().cluster_id, "three");
    assert_eq!(
        follower.propose(allocate(3)).await.unwrap(),
        CommandResult::ProducerIds { first: 0 }
    );
    // ...and everywhere soon after.
    for node in &nodes {
        wait_image(node, "the commands on every voter", |i| {
            i.cluster_id == "three" && i.next_producer_id == 3
        })
        .await;
    }
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_replicates_the_image_and_can_propose() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(4);
    let voters: BTreeMap<NodeId, String> = (1..=3).zip(addrs.iter().cloned()).collect();
    let mut nodes = Vec::new();
    for (id, addr) in &voters {
        nodes.push(start(config(*id, &voters, addr, dir.path())).await);
    }
    let all: Vec<&RaftQuorum> = nodes.iter().collect();
    agreed_leader(&all).await;
    nodes[0].propose(allocate(5)).await.unwrap();

    let learner = start(config(4, &voters, &addrs[3], dir.path())).await;
    wait_image(&learner, "the learner to replicate", |i| {
        i.next_producer_id == 5
    })
    .await;
    assert!(!learner.is_leader());
    assert_eq!(
        learner.propose(allocate(1)).await.unwrap(),
        CommandResult::ProducerIds { first: 5 }
    );
    assert_eq!(learner.image().next_producer_id, 6);
    for node in &nodes {
        wait_image(node, "the learner's proposal on every voter", |i| {
            i.next_producer_id == 6
        })
        .await;
    }

    // A restarted learner comes back with its image and keeps following.
    learner.shutdown().await;
    nodes[1].propose(allocate(1)).await.unwrap();
    let learner = start(config(4, &voters, &addrs[3], dir.path())).await;
    wait_image(&learner, "the restarted learner to catch up", |i| {
        i.next_producer_id == 7
    })
    .await;
    learner.shutdown().await;
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_the_old_leader_rejoins_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let voters: BTreeMap<NodeId, String> = (1..=3).zip(addrs.iter().cloned()).collect();
    let mut nodes = BTreeMap::new();
    for (id, addr) in &voters {
        nodes.insert(*id, start(config(*id, &voters, addr, dir.path())).await);
    }
    let all: Vec<&RaftQuorum> = nodes.values().collect();
    let old_leader = agreed_leader(&all).await;
    nodes[&old_leader].propose(allocate(2)).await.unwrap();

    let killed = nodes.remove(&old_leader).unwrap();
    killed.shutdown().await;
    let survivors: Vec<&RaftQuorum> = nodes.values().collect();
    wait_for("a new leader among the survivors", || {
        survivors
            .iter()
            .any(|n| n.is_leader() && n.node_id() != old_leader)
    })
    .await;
    // Proposed on each survivor, leader or not: a follower may still name the dead leader for
    // a moment and must retry.
    for node in &survivors {
        node.propose(allocate(1)).await.unwrap();
    }
    for node in &survivors {
        wait_image(node, "both proposals on the survivors", |i| {
            i.next_producer_id == 4
        })
        .await;
    }

    let restarted = start(config(
        old_leader,
        &voters,
        &voters[&old_leader],
        dir.path(),
    ))
    .await;
    wait_image(&restarted, "the restarted voter to catch up", |i| {
        i.next_producer_id == 4
    })
    .await;
    restarted.propose(allocate(1)).await.unwrap();
    for node in nodes.values() {
        wait_image(node, "the restarted voter's proposal", |i| {
            i.next_producer_id == 5
        })
        .await;
    }
    restarted.shutdown().await;
    for node in nodes.values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_voter_recovers_its_image_from_disk_with_and_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addrs(1).remove(0);
    let voters = BTreeMap::from([(1, addr.clone())]);
    let node = start(config(1, &voters, &addr, dir.path())).await;
    node.propose(MetadataCommand::InitCluster {
        cluster_id: "durable".into(),
    })
    .await
    .unwrap();
    node.propose(allocate(7)).await.unwrap();
    node.shutdown().await;

    // From the log alone.
    let node = start(config(1, &voters, &addr, dir.path())).await;
    wait_image(&node, "the image from the log", |i| {
        i.cluster_id == "durable" && i.next_producer_id == 7
    })
    .await;
    node.snapshot().await.unwrap();
    node.propose(allocate(3)).await.unwrap();
    node.shutdown().await;
    assert!(dir.path().join("node-1").join("snapshot.json").exists());

    // From the snapshot and the log after it.
    let node = start(config(1, &voters, &addr, dir.path())).await;
    wait_image(&node, "the image from snapshot and log", |i| {
        i.cluster_id == "durable" && i.next_producer_id == 10
    })
    .await;
    wait_for("node 1 to lead again", || node.is_leader()).await;
    assert_eq!(
        node.propose(allocate(1)).await.unwrap(),
        CommandResult::ProducerIds { first: 10 }
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_behind_a_purged_log_receives_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(2);
    let voters = BTreeMap::from([(1, addrs[0].clone())]);
    let mut voter_config = config(1, &voters, &addrs[0], dir.path());
    voter_config.tuning = RaftTuning {
        snapshot_every: 10,
        logs_kept_after_snapshot: 0,
        ..RaftTuning::default()
    };
    let voter = start(voter_config).await;
    for _ in 0..25 {
        voter.propose(allocate(1)).await.unwrap();
    }
    voter.snapshot().await.unwrap();
    // The log before the snapshot is purged, so the learner cannot catch up from it.
    let purged = Instant::now() + WAIT;
    while voter.inner_purged_index().is_none() {
        assert!(Instant::now() < purged, "the voter never purged its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let learner = start(config(2, &voters, &addrs[1], dir.path())).await;
    wait_image(&learner, "the snapshot on the learner", |i| {
        i.next_producer_id == 25
    })
    .await;
    assert!(dir.path().join("node-2").join("snapshot.json").exists());
    assert_eq!(
        learner.propose(allocate(1)).await.unwrap(),
        CommandResult::ProducerIds { first: 25 }
    );
    let image: Arc<MetadataImage> = voter.image();
    assert_eq!(image.next_producer_id, 26);
    learner.shutdown().await;
    voter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposing_without_a_quorum_fails_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3);
    let voters: BTreeMap<NodeId, String> = (1..=3).zip(addrs.iter().cloned()).collect();
    // Only one of three voters runs: it can never be elected.
    let mut lone = config(1, &voters, &addrs[0], dir.path());
    lone.tuning.propose_timeout = Duration::from_millis(1500);
    let node = start(lone).await;
    let started = Instant::now();
    let err = node.propose(allocate(1)).await.unwrap_err();
    assert!(matches!(err, QuorumError::NoLeader { .. }), "{err}");
    assert!(!err.may_have_been_committed());
    assert!(started.elapsed() < Duration::from_secs(5));

    // The token given at start stops the node too.
    let token = CancellationToken::new();
    let dir2 = tempfile::tempdir().unwrap();
    let addr = free_addrs(1).remove(0);
    let solo = BTreeMap::from([(9, addr.clone())]);
    let other = RaftQuorum::start(config(9, &solo, &addr, dir2.path()), token.clone())
        .await
        .unwrap();
    token.cancel();
    wait_for("the listener to close", || {
        std::net::TcpStream::connect(other.local_addr()).is_err()
    })
    .await;
    other.shutdown().await;
    node.shutdown().await;
}
