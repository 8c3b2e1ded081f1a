#!/usr/bin/env bash
# Install layerbench and run the main job: first overlay and vfs side by side on the example
# image and trace shipped with the package, then the built-in default campaign (all drivers x
# the main workloads x two images), which writes results/default/ and says where its report
# is.  Usage: bash scripts/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e .
layerbench run --driver overlay --driver vfs --image demo --workload demo
echo
layerbench campaign default
