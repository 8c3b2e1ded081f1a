#!/usr/bin/env bash
# Install layerbench and run the main job: overlay and vfs side by side on the example image
# and trace shipped with the package.  Usage: bash scripts/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e .
layerbench run --driver overlay --driver vfs --image demo --workload demo
