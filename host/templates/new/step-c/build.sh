#!/bin/sh
# Build {{name}}.wasm:
#   1. C bindings of the contract in wit/ (wit-bindgen, crates.io)
#   2. app.c (or app.cpp, for C++) compiled for wasm32-wasi by clang with wasi-libc
#      (Debian: clang lld wasi-libc libclang-rt-dev-wasm32, and libc++-dev-wasm32 for C++;
#      or wasi-sdk: CC=/opt/wasi-sdk/bin/clang CXX=... WASI_SYSROOT=...)
#   3. made a component with the WASI preview-1 adapter beside this file (wasm-tools)
# Tools, once: cargo install --locked wit-bindgen-cli@0.57.1 wasm-tools@1.254.2
set -e
cd "$(dirname "$0")"
mkdir -p gen
wit-bindgen c wit --world typed-step --out-dir gen
target="--target=wasm32-wasi --sysroot=${WASI_SYSROOT:-/usr} -O2 -Wall -Werror -Igen"
${CC:-clang} $target -c gen/typed_step.c -o gen/typed_step.o
if [ -f app.cpp ]; then
  ${CXX:-clang++} $target -fno-exceptions -mexec-model=reactor \
    app.cpp gen/typed_step.o gen/typed_step_component_type.o -o gen/{{name}}.core.wasm
else
  ${CC:-clang} $target -mexec-model=reactor \
    app.c gen/typed_step.o gen/typed_step_component_type.o -o gen/{{name}}.core.wasm
fi
wasm-tools component new gen/{{name}}.core.wasm \
  --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
