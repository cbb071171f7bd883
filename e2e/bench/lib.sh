# shellcheck shell=bash
# Shared by compare.sh and profile.sh, sourced right after their `set -euo pipefail`: usage
# text, argument checks, the release build (run from the repository root), and starting,
# waiting for and stopping a broker.

# The script that sourced this file, found before it changes directory.
SCRIPT=$(realpath "$0")

say() { printf '\n==> %s\n' "$*" >&2; }

usage() { # the calling script's header comment
    sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'
}

require_positive() { # NAME...: each variable holds a positive integer, or the script exits
    local name
    for name in "$@"; do
        [[ ${!name} =~ ^[0-9]+$ && ${!name} -gt 0 ]] || {
            echo "$name must be a positive integer" >&2
            exit 2
        }
    done
}

# build_release VERB: builds oxbow-bench, and oxbow-broker unless OXBOW_BIN names one, in
# release (into CARGO_TARGET_DIR when set); sets OXBOW and BENCH to the binaries. VERB says
# what is done with the broker.
build_release() {
    local target=${CARGO_TARGET_DIR:-$PWD/target}
    if [[ -n $OXBOW_BIN ]]; then
        OXBOW=$(realpath "$OXBOW_BIN")
        [[ -x $OXBOW ]] || { echo "--oxbow-bin $OXBOW_BIN is not an executable" >&2; exit 2; }
        say "Building oxbow-bench (release); $1 $OXBOW"
        cargo build --release --bin oxbow-bench
    else
        say "Building oxbow-broker and oxbow-bench (release)"
        cargo build --release --bin oxbow-broker --bin oxbow-bench
        OXBOW=$target/release/oxbow-broker
    fi
    # shellcheck disable=SC2034 # read by the sourcing script
    BENCH=$target/release/oxbow-bench
}

# The brokers run on their defaults plus the flags given: nothing from the caller's environment
# may change them. Call it once the build has read OXBOW_BIN.
clear_broker_env() {
    local name
    while read -r name; do
        case $name in OXBOW_*|RUST_LOG) unset "$name" ;; esac
    done < <(compgen -e)
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# oxbow_flags PORT METRICS_PORT DATA_DIR: sets OXBOW_FLAGS, the command line of a single broker
# (node 0) on 127.0.0.1.
oxbow_flags() {
    # shellcheck disable=SC2034 # read by the sourcing script
    OXBOW_FLAGS=(
        --listeners "PLAINTEXT://127.0.0.1:$1"
        --advertised-listeners "PLAINTEXT://127.0.0.1:$1"
        --log-dirs "$3"
        --node-id 0
        --metrics-address "127.0.0.1:$2"
    )
}

# wait_listening NAME PID PORT LOG SECONDS: returns once the port accepts a connection; fails,
# showing the end of the log, if the process exits first or SECONDS pass.
wait_listening() {
    local name=$1 pid=$2 port=$3 log=$4 seconds=$5
    for _ in $(seq $((seconds * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited at start; its log:" >&2 && tail -n 40 "$log" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not accept connections within $seconds s; its log:" >&2 && tail -n 40 "$log" >&2
    return 1
}

# stop_process PID SECONDS: SIGTERM, then SIGKILL if it is still running after SECONDS.
stop_process() {
    local pid=$1 seconds=$2
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((seconds * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
