#!/usr/bin/env bash
# Fuzz the pipeline parser and validator for a bounded time each (default 60 s):
#   fuzz/run.sh [SECONDS]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Crashes land in
# fuzz/artifacts/TARGET/. The built-in steps are not embedded (WHARF_SKIP_GUESTS): the
# parser and validator need none, and nightly may lack the wasm target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-60}
export WHARF_SKIP_GUESTS=1
for target in parse_pipeline validate_pipeline; do
  mkdir -p "corpus/$target"
  cp seeds/*.yml "corpus/$target/"
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=8192
done
