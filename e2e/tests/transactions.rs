//! Transactions with Apache Kafka 4.1's Java client (`e2e/java/Transactions.java`), on Oxbow
//! and on a real Kafka broker side by side: what `read_committed` and `read_uncommitted`
//! consumers see of committed and aborted transactions, a zombie fenced by a second producer
//! with its transactional id, a consume-transform-produce loop killed inside a transaction and
//! restarted, and an open transaction holding the last stable offset until the coordinator
//! aborts it at its timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use oxbow_e2e::kafka::Server;
use oxbow_e2e::side_by_side;
use oxbow_e2e::transactions::{self, Consumed, Isolation, Record};

/// How long a Java client may take to start and print its first line.
const START: Duration = Duration::from_secs(60);
/// The coordinator's scan for transactions past their timeout, for both brokers.
const TIMEOUT_SCAN: &[&str] = &["transaction.abort.timed.out.transaction.cleanup.interval.ms=500"];

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values
}

/// Each partition's records, by offset.
fn by_partition(records: &[Record]) -> BTreeMap<i32, Vec<&Record>> {
    let mut partitions: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for record in records {
        partitions.entry(record.partition).or_default().push(record);
    }
    partitions
}

/// The records a copy loop says it committed: the sum of its `COMMITTED t n` lines.
fn committed_records(lines: &[String]) -> Result<usize> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix("COMMITTED "))
        .map(|rest| {
            let (_, count) = rest
                .split_once(' ')
                .with_context(|| format!("not COMMITTED t n: {rest:?}"))?;
            Ok(count.parse::<usize>()?)
        })
        .sum()
}

/// Committed and aborted transactions on two partitions: a `read_committed` consumer reads
/// every committed record once and no aborted one; a `read_uncommitted` consumer reads both,
/// the aborted records between committed ones; with no transaction open both end at the same
/// offsets.
fn read_committed_skips_aborted_records_read_uncommitted_sees_them(server: &Server) -> Result<()> {
    server.create_topic("mixed", 2)?;
    let produced = transactions::produce(server, "mixed", "mixer", "cacaacc", 4)?;

    let committed = transactions::consume(server, "mixed", Isolation::ReadCommitted)?;
    ensure!(
        sorted(committed.values()) == sorted(produced.committed.clone()),
        "read_committed read {:?}, {:?} were committed",
        committed.values(),
        produced.committed
    );

    let uncommitted = transactions::consume(server, "mixed", Isolation::ReadUncommitted)?;
    let mut everything = produced.committed.clone();
    everything.extend(produced.aborted.iter().cloned());
    ensure!(
        sorted(uncommitted.values()) == sorted(everything),
        "read_uncommitted read {:?}",
        uncommitted.values()
    );
    ensure!(
        committed.ends == uncommitted.ends,
        "no transaction is open, yet the last stable offsets {:?} are not the high watermarks {:?}",
        committed.ends,
        uncommitted.ends
    );
    // Within a partition, an aborted record sits between committed ones.
    let interleaved = by_partition(&uncommitted.records).values().any(|records| {
        let committed_at: Vec<usize> = (0..records.len())
            .filter(|&i| produced.committed.contains(&records[i].value))
            .collect();
        (0..records.len()).any(|i| {
            produced.aborted.contains(&records[i].value)
                && committed_at.first().is_some_and(|&c| c < i)
                && committed_at.last().is_some_and(|&c| c > i)
        })
    });
    ensure!(
        interleaved,
        "no aborted record between committed ones: {:?}",
        uncommitted.records
    );
    // Offsets grow in each partition, and the committed records keep their offsets.
    for records in by_partition(&uncommitted.records).values() {
        ensure!(
            records.windows(2).all(|w| w[0].offset < w[1].offset),
            "{records:?}"
        );
    }
    for record in &committed.records {
        ensure!(
            uncommitted.records.contains(record),
            "{record:?} is not where read_uncommitted saw it"
        );
    }
    Ok(())
}
side_by_side!(read_committed_skips_aborted_records_read_uncommitted_sees_them);

/// A producer with a transaction open is fenced by a second one with its transactional id:
/// the first one's commit fails with `ProducerFencedException`, the second one's records are
/// committed, and nothing of the first one's transaction is ever read with `read_committed`
/// although its records are in the log.
fn a_second_producer_with_the_transactional_id_fences_the_first(server: &Server) -> Result<()> {
    server.create_topic("fencing", 1)?;
    let scratch = tempfile::tempdir()?;
    let trigger = scratch.path().join("commit-now");
    let mut zombie = transactions::start(
        server,
        scratch.path(),
        "zombie",
        "open",
        &[
            "fencing",
            "shared-id",
            "3",
            "60000",
            &trigger.to_string_lossy(),
        ],
    )?;
    zombie.wait_until("holding a transaction open", START, |lines| {
        lines.iter().any(|l| l == "HANGING")
    })?;
    let opened: Vec<String> = (0..3).map(|r| format!("shared-id-open-{r}")).collect();

    let successor = transactions::produce(server, "fencing", "shared-id", "c", 3)?;

    std::fs::write(&trigger, b"")?;
    zombie.wait_until("trying to commit", START, |lines| {
        lines.iter().any(|l| l.starts_with("COMMIT"))
    })?;
    let failed = zombie.lines("COMMIT FAILED ");
    ensure!(
        failed == ["org.apache.kafka.common.errors.ProducerFencedException"]
            && zombie.lines("COMMITTED").is_empty(),
        "the fenced producer's commit: {:?}\n{}",
        zombie.lines("COMMIT"),
        zombie.log_tail(40)
    );

    let committed = transactions::consume(server, "fencing", Isolation::ReadCommitted)?;
    ensure!(
        committed.values() == successor.committed,
        "read_committed read {:?}, not only the successor's {:?}",
        committed.values(),
        successor.committed
    );
    let uncommitted = transactions::consume(server, "fencing", Isolation::ReadUncommitted)?;
    for value in &opened {
        ensure!(
            uncommitted.values().contains(value),
            "the fenced transaction's {value} never reached the log: {:?}",
            uncommitted.values()
        );
    }
    Ok(())
}
side_by_side!(a_second_producer_with_the_transactional_id_fences_the_first);

/// A consume-transform-produce loop (read_committed input, output and the group's offsets in
/// one transaction per poll) is SIGKILLed while a transaction is open with records sent, then
/// restarted with the same transactional id and group: the committed output is every
/// committed input exactly once, while the killed transaction's records stay in the log,
/// aborted.
fn a_copy_loop_killed_inside_a_transaction_outputs_every_input_exactly_once(
    server: &Server,
) -> Result<()> {
    server.create_topic("copy-in", 2)?;
    server.create_topic("copy-out", 2)?;
    let input = transactions::produce(server, "copy-in", "feeder", "ccaccacc", 5)?;
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    let args = |pause: &'static str| ["copy-in", "copy-out", "copier", "copier-group", pause];

    // A long pause between sending a transaction's records and committing it: the kill lands
    // inside the second transaction.
    let mut first = transactions::start(server, dir, "copy-1", "copy", &args("3000"))?;
    first.wait_until("inside its second transaction", START, |lines| {
        lines.iter().any(|l| l.starts_with("OPEN 1 "))
    })?;
    first.kill()?;
    let printed = first.lines("");
    ensure!(
        printed.iter().any(|l| l.starts_with("COMMITTED 0 ")),
        "{printed:?}"
    );
    ensure!(
        !printed.iter().any(|l| l.starts_with("COMMITTED 1 ")),
        "killed too late: the second transaction committed: {printed:?}"
    );
    let killed: usize = printed
        .iter()
        .find_map(|l| l.strip_prefix("OPEN 1 "))
        .context("the open transaction's size")?
        .parse()?;

    let already = committed_records(&printed)?;
    let wanted = input.committed.len();
    let mut second = transactions::start(server, dir, "copy-2", "copy", &args("0"))?;
    second.wait_until("copying the rest", START, |lines| {
        committed_records(lines).is_ok_and(|n| already + n >= wanted)
    })?;
    let copied = committed_records(&second.lines(""))?;
    ensure!(
        already + copied == wanted,
        "{already} + {copied} records copied in committed transactions, {wanted} inputs"
    );
    second.kill()?;

    let output = transactions::consume(server, "copy-out", Isolation::ReadCommitted)?;
    ensure!(
        sorted(output.values()) == sorted(input.committed.clone()),
        "read_committed output {:?} is not the committed input {:?} once each",
        sorted(output.values()),
        sorted(input.committed.clone())
    );
    let all = transactions::consume(server, "copy-out", Isolation::ReadUncommitted)?;
    ensure!(
        all.records.len() == wanted + killed,
        "the log holds {} records, not the {wanted} committed and the {killed} of the killed transaction: {:?}",
        all.records.len(),
        all.values()
    );
    Ok(())
}
side_by_side!(a_copy_loop_killed_inside_a_transaction_outputs_every_input_exactly_once);

/// An open transaction holds the last stable offset: a following `read_committed` consumer
/// sees neither its records nor those committed after it, and ListOffsets `read_committed`
/// stays at its first offset. Left open past `transaction.timeout.ms`, the coordinator aborts
/// it, and the consumer reads on to the end: the records committed after it, never its own.
fn an_open_transaction_holds_the_lso_until_its_timeout_aborts_it(server: &Server) -> Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(12);
    server.create_topic("held", 1)?;
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    let before = transactions::produce(server, "held", "before", "c", 3)?;
    let mut reader = transactions::start(
        server,
        dir,
        "reader",
        "consume",
        &["held", "read_committed", "follow"],
    )?;
    reader.wait_until("reading what was committed", START, |lines| {
        lines.iter().filter(|l| l.starts_with("RECORD ")).count() == before.committed.len()
    })?;

    let started = Instant::now();
    let timeout_ms = TIMEOUT.as_millis().to_string();
    let mut stuck = transactions::start(
        server,
        dir,
        "stuck",
        "open",
        &["held", "stuck", "3", &timeout_ms],
    )?;
    stuck.wait_until("holding a transaction open", START, |lines| {
        lines.iter().any(|l| l == "HANGING")
    })?;
    let first = stuck
        .lines("OPEN ")
        .iter()
        .map(|l| l.split_once(' ').map(|(_, o)| o.parse::<i64>()))
        .collect::<Option<Result<Vec<_>, _>>>()
        .context("OPEN partition offset")??
        .into_iter()
        .min()
        .context("no record in the open transaction")?;
    let after = transactions::produce(server, "held", "after", "c", 3)?;
    // The reader has had time to see the records committed after the open transaction.
    std::thread::sleep(Duration::from_secs(1));
    let held = Consumed::parse(&reader.lines(""))?;
    ensure!(
        started.elapsed() < TIMEOUT,
        "the checks took {:?}, longer than the transaction's timeout: they show nothing",
        started.elapsed()
    );
    ensure!(
        held.values() == before.committed,
        "while a transaction is open at offset {first}, read_committed read {:?}",
        held.values()
    );
    ensure!(
        held.ends.get(&0) == Some(&first),
        "the read_committed end offset is {:?}, not the open transaction's first offset {first}",
        held.ends
    );

    reader
        .wait_until(
            "reading past the aborted transaction",
            TIMEOUT + Duration::from_secs(20),
            |lines| {
                Consumed::parse(lines).is_ok_and(|c| {
                    c.records.len() >= before.committed.len() + after.committed.len()
                })
            },
        )
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", stuck.log_tail(20)))?;
    ensure!(
        started.elapsed() >= TIMEOUT,
        "the transaction ended before its timeout"
    );
    let everything = transactions::consume(server, "held", Isolation::ReadUncommitted)?;
    reader.wait_until("at the high watermark", Duration::from_secs(10), |lines| {
        Consumed::parse(lines).is_ok_and(|c| c.ends == everything.ends)
    })?;
    let released = Consumed::parse(&reader.lines(""))?;
    let mut committed = before.committed.clone();
    committed.extend(after.committed.iter().cloned());
    ensure!(
        released.values() == committed,
        "read_committed read {:?} after the abort",
        released.values()
    );
    let aborted: Vec<&Record> = everything
        .records
        .iter()
        .filter(|r| r.value.starts_with("stuck-open-"))
        .collect();
    ensure!(
        aborted.len() == 3 && aborted[0].offset == first,
        "the timed-out transaction's records: {aborted:?}"
    );
    Ok(())
}
side_by_side!(
    an_open_transaction_holds_the_lso_until_its_timeout_aborts_it,
    super::TIMEOUT_SCAN
);
