//! The Java client in transactions, for side-by-side tests: `e2e/java/Transactions.java`
//! (a transactional producer, a consumer at either isolation level, a consume-transform-produce
//! loop, a transaction left open) run against a [`Server`], and what it printed, parsed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::kafka::{java_source, run_java, JavaProcess, Server};

const PROGRAM: &str = "Transactions.java";

/// `read_committed` or `read_uncommitted`, as the consumer's `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    ReadUncommitted,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// One record a consumer printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    /// `null` for a record without a key.
    pub key: String,
    pub value: String,
}

/// What a consumer read: the end offset of each partition (the last it printed) and the
/// records, in the order it printed them.
#[derive(Debug, Clone, Default)]
pub struct Consumed {
    pub ends: BTreeMap<i32, i64>,
    pub records: Vec<Record>,
}

impl Consumed {
    /// The values read, in order.
    pub fn values(&self) -> Vec<String> {
        self.records.iter().map(|r| r.value.clone()).collect()
    }

    /// Parses the program's `END` and `RECORD` lines.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Consumed> {
        let mut consumed = Consumed::default();
        for line in lines {
            let line = line.as_ref();
            if let Some(end) = line.strip_prefix("END ") {
                let (partition, offset) = end
                    .split_once(' ')
                    .with_context(|| format!("not END partition offset: {line:?}"))?;
                consumed.ends.insert(partition.parse()?, offset.parse()?);
            } else if let Some(record) = line.strip_prefix("RECORD ") {
                let mut parts = record.splitn(4, ' ');
                let (Some(partition), Some(offset), Some(key), Some(value)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    bail!("not RECORD partition offset key value: {line:?}");
                };
                consumed.records.push(Record {
                    partition: partition.parse()?,
                    offset: offset.parse()?,
                    key: key.to_string(),
                    value: value.to_string(),
                });
            }
        }
        Ok(consumed)
    }
}

/// The values a `produce` run commits and aborts, in order: transaction `t` of
/// `transactional_id` (one per letter of `pattern`, `c` committed, `a` aborted) holds
/// `per_transaction` records `ID-t-r`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Produced {
    pub committed: Vec<String>,
    pub aborted: Vec<String>,
}

impl Produced {
    /// What the program should print for these arguments, worked out here.
    pub fn expected(transactional_id: &str, pattern: &str, per_transaction: usize) -> Produced {
        let mut produced = Produced::default();
        for (t, outcome) in pattern.chars().enumerate() {
            let values = (0..per_transaction).map(|r| format!("{transactional_id}-{t}-{r}"));
            match outcome {
                'c' => produced.committed.extend(values),
                _ => produced.aborted.extend(values),
            }
        }
        produced
    }
}

fn source() -> String {
    java_source(PROGRAM).to_string_lossy().into_owned()
}

/// Runs `mode` of the program against `server` to its end; an error quoting its output when it
/// fails.
pub fn run(server: &Server, mode: &str, args: &[&str]) -> Result<Vec<String>> {
    let bootstrap = server.bootstrap();
    let mut all = vec![mode, bootstrap.as_str()];
    all.extend_from_slice(args);
    let out = run_java(&source(), PROGRAM, &all, None)?.ok()?;
    Ok(out.lines().into_iter().map(str::to_string).collect())
}

/// Starts `mode` of the program against `server` in the background, logging to
/// `dir/name.log`; see [`JavaProcess::lines`] for what it printed.
pub fn start(
    server: &Server,
    dir: &Path,
    name: &str,
    mode: &str,
    args: &[&str],
) -> Result<JavaProcess> {
    let bootstrap = server.bootstrap();
    let mut all = vec![mode, bootstrap.as_str()];
    all.extend_from_slice(args);
    JavaProcess::start(name, &source(), &all, &dir.join(format!("{name}.log")))
}

/// Writes one transaction per letter of `pattern` to `topic` with `transactional_id`, and
/// checks that the program committed and aborted what [`Produced::expected`] says.
pub fn produce(
    server: &Server,
    topic: &str,
    transactional_id: &str,
    pattern: &str,
    per_transaction: usize,
) -> Result<Produced> {
    let lines = run(
        server,
        "produce",
        &[
            topic,
            transactional_id,
            pattern,
            &per_transaction.to_string(),
        ],
    )?;
    let mut produced = Produced::default();
    for line in &lines {
        if let Some(value) = line.strip_prefix("COMMITTED ") {
            produced.committed.push(value.to_string());
        } else if let Some(value) = line.strip_prefix("ABORTED ") {
            produced.aborted.push(value.to_string());
        }
    }
    let expected = Produced::expected(transactional_id, pattern, per_transaction);
    if produced != expected {
        bail!("the producer printed {produced:?}, not {expected:?}: {lines:?}");
    }
    Ok(produced)
}

/// Reads `topic` from the beginning to the end offsets `isolation` gives.
pub fn consume(server: &Server, topic: &str, isolation: Isolation) -> Result<Consumed> {
    let lines = run(server, "consume", &[topic, isolation.as_str(), "until-end"])?;
    if lines.last().map(String::as_str) != Some("DONE") {
        bail!("the consumer did not finish: {lines:?}");
    }
    Consumed::parse(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_gives_committed_and_aborted_values_in_order() {
        let produced = Produced::expected("p", "cac", 2);
        assert_eq!(produced.committed, ["p-0-0", "p-0-1", "p-2-0", "p-2-1"]);
        assert_eq!(produced.aborted, ["p-1-0", "p-1-1"]);
    }

    #[test]
    fn consumer_lines_are_parsed_and_the_last_end_wins() {
        let consumed = Consumed::parse(&[
            "END 0 4",
            "RECORD 0 1 k a value with spaces",
            "[2026-01-01] INFO something else",
            "END 0 9",
        ])
        .unwrap();
        assert_eq!(consumed.ends, BTreeMap::from([(0, 9)]));
        assert_eq!(
            consumed.records,
            [Record {
                partition: 0,
                offset: 1,
                key: "k".to_string(),
                value: "a value with spaces".to_string()
            }]
        );
    }
}
