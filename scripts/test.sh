#!/usr/bin/env bash
# Install everything the tests need (Debian tools, then the package with its test extras)
# and run every test: unit, conformance, real-kernel (as root), notebooks and a single pass
# of each benchmark.  Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  btrfs-progs      # real btrfs on a loop file (tests/test_real_btrfs.py)
  xfsprogs         # reflink-capable host filesystem for the dm-thin emulation
  e2fsprogs        # journal-less ext4 guest images
  fuse-overlayfs   # the FUSE overlay reference
  fuse3            # fusermount3, to unmount it
  qemu-utils       # qcow2 backing chains: exact block-CoW reference
  umoci skopeo     # third-party OCI tools: build and unpack real image layouts
  strace           # recording traces of real programs
  attr             # getfattr/setfattr for inspecting overlay xattrs
  chromium         # headless rendering of report.html
)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

python3 -m pytest -q --nbmake tests notebooks "$@"
python3 -m pytest -q benchmarks --benchmark-disable -p no:cacheprovider
