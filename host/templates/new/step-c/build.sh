#!/bin/sh
# Build {{name}}.wasm:
#   1. C bindings of the contract in wit/ (wit-bindgen, crates.io)
#   2. compiled for wasm32-wasi by clang with wasi-libc (Debian: clang lld wasi-libc
#      libclang-rt-dev-wasm32; or wasi-sdk: CC=/opt/wasi-sdk/bin/clang WASI_SYSROOT=...)
#   3. made a component with the WASI preview-1 adapter beside this file (wasm-tools)
# Tools, once: cargo install --locked wit-bindgen-cli@0.57.1 wasm-tools@1.254.2
set -e
cd "$(dirname "$0")"
mkdir -p gen
wit-bindgen c wit --world typed-step --out-dir gen
${CC:-clang} --target=wasm32-wasi --sysroot="${WASI_SYSROOT:-/usr}" -mexec-model=reactor \
  -O2 -Wall -Werror -Wno-unused-function -Igen \
  app.c gen/typed_step.c gen/typed_step_component_type.o -o gen/{{name}}.core.wasm
wasm-tools component new gen/{{name}}.core.wasm \
  --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
