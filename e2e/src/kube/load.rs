//! Load for the operator's tests: an `acks=all` producer that keeps going while the cluster
//! changes under it, and a check that every record it had acknowledged reads back where it
//! was acknowledged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message as _;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::harness::{base_consumer, future_producer, numbered_key, numbered_value};

/// One record the brokers acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// A producer sending numbered records to a topic with `acks=all` until stopped, in batches
/// of 20 whose acknowledgements it waits for, keeping where each acknowledged record went.
pub struct Producing {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Producing {
    /// Starts producing to `topic` through `bootstrap`, on the current Tokio runtime.
    pub fn start(bootstrap: &str, topic: &str) -> anyhow::Result<Producing> {
        let producer = future_producer(bootstrap)?;
        let topic = topic.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            async move {
                let mut seq = 0;
                while !stop.load(Ordering::SeqCst) {
                    let mut batch = Vec::new();
                    for _ in 0..20 {
                        let (key, value) = (numbered_key(seq), numbered_value(seq));
                        let delivery = producer
                            .send_result(FutureRecord::to(&topic).key(&key).payload(&value))
                            .map_err(|(error, _)| {
                                anyhow::anyhow!("queueing record {seq}: {error}")
                            })?;
                        batch.push((value, delivery));
                        seq += 1;
                    }
                    for (value, delivery) in batch {
                        match delivery.await {
                            Ok(Ok(delivery)) => acked.lock().expect("acks").push(Acked {
                                partition: delivery.partition,
                                offset: delivery.offset,
                                value,
                            }),
                            Ok(Err((error, _))) => {
                                eprintln!("record {value} not acknowledged: {error}");
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => bail!("the producer dropped a delivery report"),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            }
        });
        Ok(Producing {
            stop,
            acked,
            failed,
            task,
        })
    }

    /// Records acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acked.lock().expect("acks").len()
    }

    /// Waits until `more` records more than now are acknowledged.
    pub async fn wait_for_progress(&self, more: usize, what: &str) -> anyhow::Result<()> {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acknowledged() < target {
            ensure!(
                !self.task.is_finished(),
                "the producer stopped while {what}"
            );
            ensure!(
                Instant::now() < deadline,
                "the producer made no progress while {what}: {} acknowledged, {} failed",
                self.acknowledged(),
                self.failed.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Stops, and returns the acknowledged records and the count of failed ones.
    pub async fn stop(self) -> anyhow::Result<(Vec<Acked>, usize)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await??;
        let acked = std::mem::take(&mut *self.acked.lock().expect("acks"));
        Ok((acked, self.failed.load(Ordering::SeqCst)))
    }
}

/// Reads `topic`'s `partitions` from the beginning until every acknowledged record has been
/// seen, with its value, at the offset it was acknowledged at.
pub fn read_back(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    acked: &[Acked],
) -> anyhow::Result<()> {
    let consumer = base_consumer(bootstrap, "read-back-check")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut missing: BTreeMap<(i32, i64), &str> = acked
        .iter()
        .map(|a| ((a.partition, a.offset), a.value.as_str()))
        .collect();
    ensure!(
        missing.len() == acked.len(),
        "two records acknowledged at the same offset"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while !missing.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                let at = (message.partition(), message.offset());
                if let Some(value) = missing.remove(&at) {
                    let read = String::from_utf8_lossy(message.payload().unwrap_or_default());
                    ensure!(
                        read == value,
                        "partition {} offset {} holds {read}, acknowledged as {value}",
                        at.0,
                        at.1
                    );
                }
            }
            Some(Err(error)) => eprintln!("reading back: {error}"),
            None => {}
        }
    }
    ensure!(
        missing.is_empty(),
        "{} of {} acknowledged records were never read back, first {:?}",
        missing.len(),
        acked.len(),
        missing.iter().next()
    );
    Ok(())
}
