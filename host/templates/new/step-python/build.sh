#!/bin/sh
# Build {{name}}.wasm with componentize-py (pip install componentize-py==0.25.1).
set -e
cd "$(dirname "$0")"
componentize-py -d wit -w typed-step componentize app -o {{name}}.wasm
