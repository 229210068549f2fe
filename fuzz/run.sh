#!/usr/bin/env bash
# Fuzz the pipeline parser and validator for a bounded time each (default 60 s):
#   fuzz/run.sh [SECONDS]
# Needs a nightly toolchain with the wasm32-wasip2 target (wharf's build embeds its steps)
# and cargo-fuzz (`cargo install cargo-fuzz`). Crashes land in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-60}
rustup +nightly target add wasm32-wasip2 >/dev/null 2>&1 || true
for target in parse_pipeline validate_pipeline; do
  mkdir -p "corpus/$target"
  cp seeds/*.yml "corpus/$target/"
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=8192
done
