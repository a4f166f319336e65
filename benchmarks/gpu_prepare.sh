#!/usr/bin/env bash
# Fetches, here (with the package registry), the wheels that benchmarks/gpu.py installs on a GPU machine without a
# network: gymnasium[mujoco], mujoco and tyro at requirements.txt's pins, pytest-xdist, and their dependencies,
# for CPython 3.12 on x86_64 Linux, into benchmarks/gpu_wheels/ (ignored by git; carry it to the GPU machine).
# What the GPU image already has is left out: torch, numpy, tensorboard, tqdm, matplotlib, pytest and what they
# pull in (numpy, pillow, pluggy, iniconfig, pygments). Fails if the folder grows past 40 MiB.
#
#   bash benchmarks/gpu_prepare.sh        # ~15 s; prints the wheels and their size
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=benchmarks/gpu_wheels
PYTHON=${PYTHON:-python3}
pin() {  # the version requirements.txt pins for package $1, e.g. pin mujoco -> 4.0.0
    sed -n "s/^$1\(\[[^]]*\]\)\{0,1\}==\([^ ;#]*\).*/\2/p" requirements.txt | head -n 1
}
GYMNASIUM=$(pin gymnasium) MUJOCO=$(pin mujoco) TYRO=$(pin tyro) XDIST=$(pin pytest-xdist)
for v in GYMNASIUM MUJOCO TYRO XDIST; do
    [ -n "${!v}" ] || { echo "error: no pin for ${v,,} in requirements.txt" >&2; exit 1; }
done
rm -rf "$DEST" && mkdir -p "$DEST"
"$PYTHON" -m pip download --quiet --dest "$DEST" --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    "gymnasium[mujoco]==$GYMNASIUM" "mujoco==$MUJOCO" "tyro==$TYRO" "pytest-xdist==$XDIST"
for name in numpy pillow pytest pluggy iniconfig pygments; do  # the image's own, and large (numpy 16, pillow 7 MB)
    rm -f "$DEST/$name"-[0-9]*.whl
done
ls -1 "$DEST"
KIB=$(du -sk "$DEST" | cut -f1)
echo "$DEST: $(ls "$DEST" | wc -l) wheels, $((KIB / 1024)) MiB ($KIB KiB)"
if [ "$KIB" -gt $((40 * 1024)) ]; then
    echo "error: $DEST is over 40 MiB: the working tree carried to the GPU machine is limited to 64 MiB" >&2
    exit 1
fi
echo "on the GPU machine: python benchmarks/gpu.py   (installs these with pip --no-index first)"
