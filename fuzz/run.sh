#!/usr/bin/env bash
# Fuzz every target for a bounded time each (default 60 s):
#   fuzz/run.sh [SECONDS]
# Targets: the pipeline parser and validator, the expression language, and reading a run
# folder (journal and snapshots). Needs a nightly toolchain and cargo-fuzz (installed here
# when missing). Crashes land in fuzz/artifacts/TARGET/ and fail the script. The targets
# use the domain crates alone, so no wasm engine is built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-60}
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
declare -A seeds=(
  [parse_pipeline]=pipeline
  [validate_pipeline]=pipeline
  [expression]=expression
  [run_folder]=run_folder
)
# One build for every target; safe Rust needs no address sanitizer to find panics, stack
# overflows and unbounded growth (libFuzzer's -rss_limit_mb catches the last).
cargo +nightly fuzz build --sanitizer none
for target in parse_pipeline validate_pipeline expression run_folder; do
  mkdir -p "corpus/$target"
  cp "seeds/${seeds[$target]}"/* "corpus/$target/"
  cargo +nightly fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
done
