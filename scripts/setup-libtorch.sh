#!/usr/bin/env bash
# Installs libtorch 2.11.0 for tch 0.24.0 without any manual step.
#
# libtorch comes from the PyPI wheel torch==2.11.0: its headers and CPU shared libraries, without
# the CUDA, NVSHMEM and Python libraries (a CUDA build is loaded at run time from a torch install
# when --device cuda is asked for). libtorch_cpu.so links libcudart/libcupti even on CPU, so those
# two come from the nvidia-cuda-runtime / nvidia-cuda-cupti wheels. The result is cached in the
# user's cache directory, shared by every clone, and linked at .libtorch in the repository, which
# .cargo/config.toml points LIBTORCH at. A second run does nothing.
set -euo pipefail

VERSION=2.11.0
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ember"
DEST="$CACHE/libtorch-$VERSION"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ -f "$DEST/build-version" ] && [ "$(cat "$DEST/build-version")" = "$VERSION" ]; then
  ln -sfn "$DEST" "$ROOT/.libtorch"
  exit 0
fi

command -v python3 >/dev/null || { echo "setup-libtorch: python3 with pip is needed to fetch the torch wheel" >&2; exit 1; }
command -v unzip >/dev/null || { echo "setup-libtorch: unzip is needed (apt-get install unzip)" >&2; exit 1; }

WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"
echo "setup-libtorch: fetching torch==$VERSION and the CUDA runtime wheels into $WHEELS" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" \
  "torch==$VERSION" "nvidia-cuda-runtime~=13.0.0" "nvidia-cuda-cupti~=13.0.0"

TMP="$(mktemp -d "$CACHE/.libtorch-tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
torch_whl="$(ls "$WHEELS"/torch-"$VERSION"-*.whl | head -n 1)"
unzip -q "$torch_whl" 'torch/include/*' 'torch/lib/*' -d "$TMP/wheel" \
  -x 'torch/lib/libtorch_cuda*.so' 'torch/lib/libc10_cuda.so' 'torch/lib/libtorch_nvshmem.so' \
     'torch/lib/libtorch_python.so' 'torch/lib/libcaffe2_nvrtc.so'
mkdir -p "$TMP/libtorch"
mv "$TMP/wheel/torch/include" "$TMP/wheel/torch/lib" "$TMP/libtorch/"
for name in nvidia_cuda_runtime nvidia_cuda_cupti; do
  whl="$(ls "$WHEELS"/${name}-13.0.*.whl | sort -V | tail -n 1)"
  unzip -q -j "$whl" 'nvidia/cu13/lib/libcudart.so.13' 'nvidia/cu13/lib/libcupti.so.13' -d "$TMP/libtorch/lib" 2>/dev/null || true
done
for lib in libcudart.so.13 libcupti.so.13 libtorch_cpu.so libc10.so; do
  [ -f "$TMP/libtorch/lib/$lib" ] || { echo "setup-libtorch: $lib missing after extraction" >&2; exit 1; }
done
echo "$VERSION" > "$TMP/libtorch/build-version"
rm -rf "$DEST"
mv "$TMP/libtorch" "$DEST"
ln -sfn "$DEST" "$ROOT/.libtorch"
echo "setup-libtorch: libtorch $VERSION ready in $DEST" >&2
