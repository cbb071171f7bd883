#!/usr/bin/env bash
# Oxbow's own CPU cost per request and per record, counted in instructions by callgrind, so
# that a change to a hot path can be judged on a busy machine (instruction counts do not
# depend on what else runs; wall-clock throughput does). Only user space is counted: the
# kernel's share of a system call (the copy into the page cache or the socket) is not.
#
#   e2e/bench/profile.sh                      # release build of the working tree
#   e2e/bench/profile.sh --oxbow-bin PATH     # another build, e.g. an older commit's
#
# The broker runs under `valgrind --tool=callgrind` with instrumentation off; for each
# workload the topic is created and every partition written once first, then
# instrumentation is switched on for the workload alone and the profile dumped after it:
#   produce-paced    64 partitions, acks=1, linger 0, 400 records/s: about one record per
#                    Produce request, so Ir/request is the fixed cost of a request
#   produce-small    64 partitions, acks=1, linger 0, unpaced (small batches)
#   produce-batched  6 partitions, acks=1, linger 5 ms
#   consume          reads everything produce-batched wrote
# Requests are counted from the broker's /metrics. A callgrind slows the broker down about
# fifty-fold, so clients batch more than against a broker at full speed: compare Ir/record
# and Ir/request between builds, not the batch sizes with compare.sh's.
#
# Settings: --records N (produce-batched and consume, default 200000), --small-records N
# (produce-small, default 50000), --paced-seconds S (default 8), --out DIR (profiles and the
# table; default target/bench/profile-DATE), --oxbow-bin PATH [OXBOW_BIN].
# Needs valgrind (apt install valgrind) and python3. Annotate a profile with
#   callgrind_annotate --inclusive=yes DIR/<workload>.callgrind | less
set -euo pipefail

# shellcheck source=e2e/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$SCRIPT")/../.."
ROOT=$PWD

RECORDS=200000
SMALL_RECORDS=50000
PACED_SECONDS=8
PACED_RATE=400
OUT=
OXBOW_BIN=${OXBOW_BIN:-}

while [[ $# -gt 0 ]]; do
    case $1 in
        --records) RECORDS=$2; shift 2 ;;
        --small-records) SMALL_RECORDS=$2; shift 2 ;;
        --paced-seconds) PACED_SECONDS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --oxbow-bin) OXBOW_BIN=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
require_positive RECORDS SMALL_RECORDS PACED_SECONDS
for tool in valgrind callgrind_control python3; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (apt install valgrind python3)" >&2; exit 2; }
done

build_release profiling
clear_broker_env

OUT=${OUT:-$ROOT/target/bench/profile-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oxbow-profile.XXXXXX")
PID=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -z $PID ]] || stop_process "$PID" 60
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_port)
METRICS=$(free_port)

say "Starting Oxbow under callgrind (instrumentation off)"
oxbow_flags "$PORT" "$METRICS" "$WORK/data"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
    "$OXBOW" "${OXBOW_FLAGS[@]}" </dev/null >"$WORK/broker.log" 2>&1 &
PID=$!
wait_listening "the broker" "$PID" "$PORT" "$WORK/broker.log" 120

requests() { # the broker's request counters, as "Produce=N Fetch=N"
    python3 - "$METRICS" <<'EOF'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=60).read().decode()
counts = dict(re.findall(r'^oxbow_requests_total\{api="(\w+)"\} (\d+)', text, re.M))
print(" ".join(f"{api}={counts.get(api, 0)}" for api in ("Produce", "Fetch")))
EOF
}

bench() { # label -- oxbow-bench arguments
    local label=$1
    shift 2
    timeout --kill-after=10 1800 "$BENCH" --bootstrap "127.0.0.1:$PORT" --timeout 300 "$@" \
        >"$WORK/$label.json" 2>>"$WORK/bench.log" || {
        echo "oxbow-bench $label failed:" >&2 && tail -n 20 "$WORK/bench.log" >&2
        return 1
    }
}

RESULTS=$OUT/profile.jsonl
: >"$RESULTS"

# profile WORKLOAD -- oxbow-bench arguments: one measured run
profile() {
    local workload=$1 before after dump
    shift 2
    before=$(requests)
    callgrind_control --instr=on "$PID" >/dev/null
    bench "$workload" -- "$@"
    callgrind_control --dump="$workload" "$PID" >/dev/null
    callgrind_control --instr=off "$PID" >/dev/null
    after=$(requests)
    # The dump is the newest numbered file callgrind wrote.
    dump=$(ls -t "$WORK"/callgrind.out.* | head -n 1)
    mv "$dump" "$OUT/$workload.callgrind"
    python3 - "$workload" "$OUT/$workload.callgrind" "$WORK/$workload.json" "$before" "$after" \
        >>"$RESULTS" <<'EOF'
import json, re, sys
workload, profile, bench, before, after = sys.argv[1:6]
ir = None
with open(profile, encoding="utf-8", errors="replace") as f:
    for line in f:
        m = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if m:
            ir = int(m.group(1))
counts = lambda s: {k: int(v) for k, v in (kv.split("=") for kv in s.split())}
b, a = counts(before), counts(after)
run = json.loads(open(bench, encoding="utf-8").read().strip().splitlines()[-1])
records = run.get("records") or run.get("received") or 0
print(json.dumps({
    "workload": workload, "ir": ir, "records": records, "bytes": run.get("bytes"),
    "produce_requests": a["Produce"] - b["Produce"], "fetch_requests": a["Fetch"] - b["Fetch"],
}))
EOF
    echo "$workload: done" >&2
}

say "produce-paced"
bench create-paced -- --topic paced produce --partitions 64 --records 64 --linger-ms 0
profile produce-paced -- --topic paced produce --duration "$PACED_SECONDS" \
    --records $((PACED_RATE * PACED_SECONDS)) --rate "$PACED_RATE" --linger-ms 0
say "produce-small"
bench create-small -- --topic small produce --partitions 64 --records 64 --linger-ms 0
profile produce-small -- --topic small produce --records "$SMALL_RECORDS" --linger-ms 0
say "produce-batched"
bench create-batched -- --topic batched produce --partitions 6 --records 6 --linger-ms 0
profile produce-batched -- --topic batched produce --records "$RECORDS" --linger-ms 5
say "consume"
profile consume -- --topic batched consume --records $((RECORDS + 6))

say "Instructions (user space) the broker spent, by workload"
python3 - "$RESULTS" "$OXBOW" <<'EOF' | tee "$OUT/profile.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
print(f"Oxbow {sys.argv[2]}, under callgrind; Ir = instructions executed in user space.")
print()
print("| workload | records | requests | records/request | Ir | Ir/request | Ir/record |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    requests = r["fetch_requests"] if r["workload"] == "consume" else r["produce_requests"]
    ir = r["ir"] or 0
    per = lambda n: f"{ir / n:,.0f}" if n else "-"
    print(f"| {r['workload']} | {r['records']:,} | {requests:,} | "
          f"{r['records'] / requests if requests else 0:,.1f} | {ir:,} | {per(requests)} | {per(r['records'])} |")
EOF
echo "profiles and table: $OUT" >&2
