#!/usr/bin/env python3
"""Turns compare.sh's raw results (JSON lines) into the table of Oxbow against Apache Kafka and
tansu, in Markdown.

Each figure is shown per broker as median (min-max) across rounds, and as the ratios
Oxbow/Kafka and Oxbow/tansu computed within each round (the brokers ran alternately in it),
each summarised as median (min-max). A round in which either broker's run failed is left out
of that ratio and counted in the "rounds" column (Kafka's count, then tansu's); the failures
are listed under the table.

Beside each broker's own CPU and memory, the throughput workloads show the benchmark
client's CPU (librdkafka and the workload's threads, from oxbow-bench's report): its CPU
seconds per GB, the share of the run its busiest thread was on a CPU, and how many CPUs the
broker and the client kept busy together. The client runs on the same machine; when its
busiest thread is near 100% or the CPUs are all busy, the figure is bound by the client and
the broker's speed can show only in its own CPU per GB.

When the run has the replicated workloads, a second table compares three Oxbow brokers
(replication factor 3, acks=all) with the single Oxbow broker of the same round, as the ratio
three brokers / one broker.

Usage: report.py RESULTS.jsonl
"""

import json
import statistics
import sys

BROKERS = ("oxbow", "kafka", "tansu")
PEERS = ("kafka", "tansu")
WORKLOADS = (
    "produce-batched",
    "produce-acks-all",
    "produce-small",
    "produce-txn",
    "consume",
    "latency",
)
HIGHER, LOWER, NEITHER = "higher", "lower", "-"


def throughput(key):
    return lambda run: run["bench"].get(key)


def cpu_per_gb(run):
    gb = run["bench"].get("bytes", 0) / 1e9
    return run["cpu_s"] / gb if gb > 0 and "cpu_s" in run else None


def client_cpu(run):
    return run["bench"].get("client_cpu") or {}


def client_cpu_per_gb(run):
    gb = run["bench"].get("bytes", 0) / 1e9
    total = client_cpu(run).get("total_s")
    return total / gb if gb > 0 and total is not None else None


def busiest_client_thread(run):
    share = client_cpu(run).get("busiest_share")
    return 100 * share if share is not None else None


def cpus_busy(run):
    """Broker and client CPU seconds per second of the run: on 2 CPUs, near 2 is saturated."""
    elapsed = run["bench"].get("elapsed_s")
    total = client_cpu(run).get("total_s")
    if not elapsed or total is None or "cpu_s" not in run:
        return None
    return (run["cpu_s"] + total) / elapsed


def peak_rss_mib(run):
    kb = run.get("peak_rss_kb")
    return kb / 1024 if kb is not None else None


def latency(kind, key):
    return lambda run: (run["bench"].get(kind) or {}).get(key)


THROUGHPUT_FIGURES = [
    ("records/s", throughput("records_per_s"), HIGHER),
    ("MB/s", throughput("mb_per_s"), HIGHER),
    ("broker CPU s/GB", cpu_per_gb, LOWER),
    ("broker peak RSS MiB", peak_rss_mib, LOWER),
    ("client CPU s/GB", client_cpu_per_gb, NEITHER),
    ("busiest client thread % of the run", busiest_client_thread, NEITHER),
    ("CPUs busy (broker + client)", cpus_busy, NEITHER),
]
FIGURES = {
    "produce-batched": THROUGHPUT_FIGURES,
    "produce-acks-all": THROUGHPUT_FIGURES,
    "produce-small": THROUGHPUT_FIGURES,
    "produce-txn": THROUGHPUT_FIGURES,
    "consume": THROUGHPUT_FIGURES,
    "latency": [
        ("end-to-end p50 ms", latency("end_to_end", "p50_ms"), LOWER),
        ("end-to-end p99 ms", latency("end_to_end", "p99_ms"), LOWER),
        ("end-to-end p99.9 ms", latency("end_to_end", "p999_ms"), LOWER),
        ("end-to-end max ms", latency("end_to_end", "max_ms"), LOWER),
        ("produce ack p99 ms", latency("ack", "p99_ms"), LOWER),
        ("broker peak RSS MiB", peak_rss_mib, LOWER),
    ],
}


def number(value):
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1e5:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value):
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def ratio_spread(ratios):
    if not ratios:
        return "-"
    if len(ratios) == 1:
        return f"**{ratio(ratios[0])}**"
    return (
        f"**{ratio(statistics.median(ratios))}** ({ratio(min(ratios))}-{ratio(max(ratios))})"
    )


def spread(values):
    if not values:
        return "-"
    if len(values) == 1:
        return number(values[0])
    return f"{number(statistics.median(values))} ({number(min(values))}-{number(max(values))})"


# (figure, workload on the cluster, workload on the single broker, extract, better)
REPLICATED_FIGURES = [
    ("produce acks=all records/s", "replicated-produce", "produce-acks-all",
     throughput("records_per_s"), HIGHER),
    ("consume records/s", "replicated-consume", "consume", throughput("records_per_s"), HIGHER),
    ("produce broker CPU s/GB", "replicated-produce", "produce-acks-all", cpu_per_gb, LOWER),
    ("consume broker CPU s/GB", "replicated-consume", "consume", cpu_per_gb, LOWER),
    ("produce broker peak RSS MiB", "replicated-produce", "produce-acks-all", peak_rss_mib, LOWER),
]


def ok_value(run, extract):
    if run and (run.get("bench") or {}).get("ok"):
        return extract(run)
    return None


def replicated_table(runs, rounds):
    """Three Oxbow brokers against one, per round; nothing when the run had no cluster."""
    if not any(key[1] == "cluster" for key in runs):
        return
    print()
    print(
        "Replicated: three Oxbow brokers (replication factor 3, acks=all) against the single "
        "Oxbow broker of the same round; CPU is the three brokers' sum, peak RSS the largest "
        "broker's. Target: at least 0.50x on throughput."
    )
    print()
    print(
        "| figure | one broker median (min-max) | three brokers median (min-max) "
        "| 3 brokers / 1 min | median | max | better | rounds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, cluster_workload, single_workload, extract, better in REPLICATED_FIGURES:
        single, cluster, ratios = [], [], []
        for round_ in rounds:
            one = ok_value(runs.get((round_, "oxbow", single_workload)), extract)
            three = ok_value(runs.get((round_, "cluster", cluster_workload)), extract)
            if one is not None:
                single.append(one)
            if three is not None:
                cluster.append(three)
            if one and three is not None:
                ratios.append(three / one)
        ratio_cells = (
            [ratio(min(ratios)), f"**{ratio(statistics.median(ratios))}**", ratio(max(ratios))]
            if ratios
            else ["-", "-", "-"]
        )
        print(
            f"| {name} | {spread(single)} | {spread(cluster)} | {' | '.join(ratio_cells)} "
            f"| {better} | {len(ratios)}/{len(rounds)} |"
        )


def main(path):
    meta, runs = {}, {}
    with open(path, encoding="utf-8") as results:
        for line in results:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if "meta" in record:
                meta = record["meta"]
                continue
            runs[(record["round"], record["broker"], record["workload"])] = record
    rounds = sorted({key[0] for key in runs})

    print(
        f"Oxbow ({meta.get('oxbow_commit', '?')}) against Apache Kafka "
        f"{meta.get('kafka', '?')} (KRaft, one JVM with kafka-server-start.sh's flags) and "
        f"{meta.get('tansu', 'tansu')} in memory; {len(rounds)} round(s); "
        f"{meta.get('records', '?')} records for produce-batched, produce-acks-all and "
        f"consume, {meta.get('small_records', '?')} for produce-small, "
        f"{meta.get('txn_records', '?')} for produce-txn (a commit every 100), "
        f"{meta.get('latency_seconds', '?')} s of latency at 1000 records/s; "
        f"{meta.get('record_size', '?')}-byte records; {meta.get('cpus', '?')} CPUs, load "
        f"average at start {meta.get('loadavg_at_start', '?')}."
    )
    print()
    print(
        "| workload | figure | Oxbow median (min-max) | Kafka median (min-max) "
        "| tansu median (min-max) | Oxbow/Kafka | Oxbow/tansu | better | rounds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    failures = []
    for (round_, broker, workload), run in sorted(runs.items()):
        bench = run.get("bench") or {}
        if not bench.get("ok"):
            failures.append(
                f"- round {round_}, {broker}, {workload}: "
                f"{bench.get('error') or bench.get('first_error') or 'failed'}"
                + (f" (lost {bench['lost']})" if bench.get("lost") else "")
            )
    for workload in WORKLOADS:
        for name, extract, better in FIGURES[workload]:
            per_broker = {broker: [] for broker in BROKERS}
            ratios = {peer: [] for peer in PEERS}
            for round_ in rounds:
                values = {}
                for broker in BROKERS:
                    run = runs.get((round_, broker, workload))
                    if run and (run.get("bench") or {}).get("ok"):
                        value = extract(run)
                        if value is not None:
                            values[broker] = value
                            per_broker[broker].append(value)
                for peer in PEERS:
                    if "oxbow" in values and values.get(peer, 0) > 0:
                        ratios[peer].append(values["oxbow"] / values[peer])
            counts = ", ".join(str(len(ratios[peer])) for peer in PEERS)
            print(
                f"| {workload} | {name} | "
                + " | ".join(spread(per_broker[broker]) for broker in BROKERS)
                + " | "
                + " | ".join(ratio_spread(ratios[peer]) for peer in PEERS)
                + f" | {better} | {counts} of {len(rounds)} |"
            )
    replicated_table(runs, rounds)
    if failures:
        print()
        print("Failed runs:")
        print("\n".join(failures))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
