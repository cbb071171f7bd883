//! `oxbow-operator balance`: the balancer as a one-shot command against any bootstrap
//! address, without Kubernetes. Progress goes to stderr, the plan or report to stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::executor::{self, Event, Goal, Report, Settings};
use super::Distribution;

/// Balance replicas and leaders of a cluster, scale it up onto new brokers, or drain brokers
/// before removing them. `--max-moves` bounds how many partitions copy at once; `--throttle`
/// caps the bytes per second each broker receiving replicas copies while the run lasts
/// (`follower.replication.throttled.rate`, removed again when the run ends).
#[derive(Debug, Clone, Args)]
pub struct BalanceArgs {
    /// Brokers to reach the cluster through, `host:port[,host:port...]`.
    #[arg(long, env = "OXBOW_BOOTSTRAP")]
    pub bootstrap: String,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Brokers replicas should live on (scale up onto these); every live broker by default.
    #[arg(long, value_delimiter = ',', value_name = "ID,..")]
    pub brokers: Option<Vec<i32>>,
    /// Brokers to empty: every replica moves off them.
    #[arg(long, value_delimiter = ',', value_name = "ID,..")]
    pub drain: Vec<i32>,
    /// Only spread preferred leaders (reorder replicas, elect); move no data.
    #[arg(long, conflicts_with_all = ["brokers", "drain", "replication_factor"])]
    pub leaders_only: bool,
    /// Change one topic's replication factor instead of balancing: `TOPIC=N`.
    #[arg(long, value_name = "TOPIC=N", value_parser = parse_replication_factor, conflicts_with_all = ["brokers", "drain"])]
    pub replication_factor: Option<(String, usize)>,
    /// Partitions reassigned at once (reassignments already in flight count).
    #[arg(long, default_value_t = 10)]
    pub max_moves: usize,
    /// Bytes per second each broker receiving replicas may copy while the run lasts; set as
    /// `follower.replication.throttled.rate` before the moves and removed at the end.
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    pub throttle: Option<u64>,
    /// Milliseconds between two looks at the cluster while moves run.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Give up after this many seconds (a rerun resumes where the cluster is).
    #[arg(long, default_value_t = 3600)]
    pub timeout_secs: u64,
    /// How stdout shows the plan (dry run) or the outcome.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

fn parse_replication_factor(value: &str) -> Result<(String, usize), String> {
    let (topic, rf) = value
        .rsplit_once('=')
        .ok_or_else(|| format!("`{value}` is not TOPIC=N"))?;
    let rf = rf
        .parse()
        .map_err(|_| format!("`{rf}` is not a replication factor"))?;
    if topic.is_empty() {
        return Err(format!("`{value}` names no topic"));
    }
    Ok((topic.to_string(), rf))
}

impl BalanceArgs {
    pub fn goal(&self) -> Goal {
        if let Some((topic, replication_factor)) = &self.replication_factor {
            Goal::ReplicationFactor {
                topic: topic.clone(),
                replication_factor: *replication_factor,
            }
        } else if self.leaders_only {
            Goal::Leaders
        } else {
            Goal::Rebalance {
                brokers: self.brokers.clone(),
                drain: self.drain.clone(),
            }
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            max_moves: self.max_moves.max(1),
            poll_interval: Duration::from_millis(self.poll_ms.max(10)),
            timeout: Duration::from_secs(self.timeout_secs),
            throttle: self.throttle,
            ..Settings::default()
        }
    }
}

/// Runs the command; the report is printed on stdout.
pub async fn run(args: BalanceArgs) -> anyhow::Result<Report> {
    let goal = args.goal();
    let mut last_wait = None;
    let mut on_event = |event: Event<'_>| match event {
        Event::Planned {
            plan,
            before,
            after,
        } => {
            eprintln!(
                "plan: {} reassignments ({} new replicas, {} reorders), {} leader elections",
                plan.moves.len(),
                plan.replica_moves(),
                plan.moves.iter().filter(|m| m.is_reorder()).count(),
                plan.elections.len()
            );
            eprint!("{}", distribution_text(before, after));
        }
        Event::Submitted { moves } => {
            for m in moves {
                eprintln!(
                    "reassigning {}-{}: {:?} -> {:?}",
                    m.topic, m.partition, m.from, m.to
                );
            }
        }
        Event::Throttled {
            brokers,
            rate: Some(rate),
        } => eprintln!("replication throttle {rate} B/s set on brokers {brokers:?}"),
        Event::Throttled {
            brokers,
            rate: None,
        } => eprintln!("replication throttle removed from brokers {brokers:?}"),
        Event::Waiting {
            in_flight,
            pending,
            done,
        } => {
            let now = (in_flight, pending, done);
            if last_wait != Some(now) {
                eprintln!("{in_flight} in flight, {pending} pending, {done} done");
                last_wait = Some(now);
            }
        }
        Event::Electing { partitions } => {
            eprintln!(
                "electing preferred leaders of {} partitions",
                partitions.len()
            );
        }
        Event::NotElected { failures } => {
            for f in failures {
                eprintln!("not elected: {}-{}: {}", f.topic, f.partition, f.reason);
            }
        }
    };
    let report = executor::run(
        &args.bootstrap,
        &goal,
        &args.settings(),
        args.dry_run,
        &mut on_event,
    )
    .await
    .with_context(|| format!("balancing the cluster at {}", args.bootstrap))?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        ),
        Output::Text => print!("{}", report_text(&report)),
    }
    Ok(report)
}

/// The plan (dry run) or the outcome, for people.
pub fn report_text(report: &Report) -> String {
    let mut text = String::new();
    let plan = &report.plan;
    if report.dry_run {
        if plan.is_empty() {
            let _ = writeln!(text, "nothing to do: the cluster is balanced");
        }
        for m in &plan.moves {
            let kind = if m.is_reorder() { "reorder" } else { "move" };
            let _ = writeln!(
                text,
                "{kind} {}-{}: {:?} -> {:?}",
                m.topic, m.partition, m.from, m.to
            );
        }
        for (topic, partition) in &plan.elections {
            let _ = writeln!(text, "elect preferred leader of {topic}-{partition}");
        }
        text.push_str(&distribution_text(&report.before, &report.after));
    } else {
        let _ = writeln!(
            text,
            "done in {:.1} s: {} reassignments, {} elections requested",
            report.elapsed_ms as f64 / 1000.0,
            report.reassignments_submitted,
            report.elections_requested
        );
        text.push_str(&distribution_text(&report.before, &report.after));
        let _ = writeln!(text, "leaders now:   {}", counts(&report.leaders_after));
        for f in &report.not_elected {
            let _ = writeln!(
                text,
                "not elected: {}-{}: {}",
                f.topic, f.partition, f.reason
            );
        }
    }
    text
}

fn distribution_text(before: &Distribution, after: &Distribution) -> String {
    format!(
        "replicas:      {}  ->  {}\npreferred:     {}  ->  {}\n",
        counts(&before.replicas),
        counts(&after.replicas),
        counts(&before.leaders),
        counts(&after.leaders)
    )
}

fn counts(counts: &BTreeMap<i32, usize>) -> String {
    counts
        .iter()
        .map(|(id, n)| format!("{id}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::balance::{Move, Plan};

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: BalanceArgs,
    }

    fn parse(args: &[&str]) -> Result<BalanceArgs, clap::Error> {
        let mut all = vec!["balance", "--bootstrap", "localhost:9092"];
        all.extend_from_slice(args);
        Command::try_parse_from(all).map(|c| c.args)
    }

    #[test]
    fn the_arguments_are_consistent() {
        use clap::CommandFactory;
        Command::command().debug_assert();
    }

    #[test]
    fn brokers_and_drain_make_a_rebalance_and_the_other_modes_exclude_them() {
        let args = parse(&["--brokers", "1,2,4", "--drain", "3", "--dry-run"]).expect("valid");
        assert_eq!(
            args.goal(),
            Goal::Rebalance {
                brokers: Some(vec![1, 2, 4]),
                drain: vec![3],
            }
        );
        assert!(args.dry_run);
        assert_eq!(
            parse(&["--replication-factor", "orders=3"])
                .expect("valid")
                .goal(),
            Goal::ReplicationFactor {
                topic: "orders".into(),
                replication_factor: 3,
            }
        );
        assert_eq!(
            parse(&["--leaders-only"]).expect("valid").goal(),
            Goal::Leaders
        );
        assert!(parse(&["--leaders-only", "--drain", "1"]).is_err());
        assert!(parse(&["--replication-factor", "orders"]).is_err());
        assert!(parse(&["--output", "yaml"]).is_err());
    }

    #[test]
    fn a_dry_run_report_lists_moves_elections_and_counts() {
        let report = Report {
            goal: Goal::Leaders,
            dry_run: true,
            plan: Plan {
                moves: vec![
                    Move {
                        topic: "t".into(),
                        partition: 0,
                        from: vec![1, 2],
                        to: vec![3, 2],
                    },
                    Move {
                        topic: "t".into(),
                        partition: 1,
                        from: vec![1, 2],
                        to: vec![2, 1],
                    },
                ],
                elections: vec![("t".into(), 1)],
            },
            before: Distribution {
                replicas: BTreeMap::from([(1, 2), (2, 2), (3, 0)]),
                leaders: BTreeMap::from([(1, 2), (2, 0), (3, 0)]),
            },
            after: Distribution {
                replicas: BTreeMap::from([(1, 1), (2, 2), (3, 1)]),
                leaders: BTreeMap::from([(1, 0), (2, 1), (3, 1)]),
            },
            leaders_after: BTreeMap::new(),
            reassignments_submitted: 0,
            elections_requested: 0,
            not_elected: Vec::new(),
            rounds: 0,
            elapsed_ms: 0,
        };
        assert_eq!(
            report_text(&report),
            "move t-0: [1, 2] -> [3, 2]\n\
             reorder t-1: [1, 2] -> [2, 1]\n\
             elect preferred leader of t-1\n\
             replicas:      1:2 2:2 3:0  ->  1:1 2:2 3:1\n\
             preferred:     1:2 2:0 3:0  ->  1:0 2:1 3:1\n"
        );
    }
}
