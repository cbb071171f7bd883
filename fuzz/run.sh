#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time, starting from the committed seeds
# (fuzz/seeds/<target>) and the corpus of earlier runs (fuzz/corpus/<target>, not committed).
# A crash, panic, timeout or out-of-memory fails the command; libFuzzer leaves the input in
# fuzz/artifacts/<target>/. Usage: bash fuzz/run.sh [seconds per target, default 30] [target...]
# Installs the nightly toolchain and cargo-fuzz when they are missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-30}"
shift || true

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The instrumented build lives outside the checkout so a fresh clone reuses it.
target_dir="${OXBOW_FUZZ_TARGET_DIR:-$HOME/.cache/oxbow/fuzz-target}"
cargo +nightly fuzz build --target-dir "$target_dir"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
    echo "--- fuzz target '$target' for ${seconds} s"
    mkdir -p "fuzz/corpus/$target"
    # A single allocation over 512 MiB counts as a crash: no input may make the broker
    # reserve memory out of proportion to its size.
    cargo +nightly fuzz run --target-dir "$target_dir" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=512 \
        -print_final_stats=1
done
