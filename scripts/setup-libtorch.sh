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

# unzip_members ZIP DEST JUNK INCLUDE... [-- EXCLUDE...]: extracts the members matching an INCLUDE
# glob and no EXCLUDE glob; JUNK=1 drops their directories. Uses unzip when installed and falls
# back to Python's zipfile module (always there with python3) when it is not.
unzip_members() {
  local zip="$1" dest="$2" junk="$3"
  shift 3
  if command -v unzip >/dev/null; then
    local inc=() exc=() seen_sep=0
    for a in "$@"; do
      if [ "$a" = "--" ]; then seen_sep=1; elif [ $seen_sep = 0 ]; then inc+=("$a"); else exc+=("$a"); fi
    done
    local flags=(-q -o)
    [ "$junk" = 1 ] && flags+=(-j)
    if [ ${#exc[@]} -gt 0 ]; then
      unzip "${flags[@]}" "$zip" "${inc[@]}" -d "$dest" -x "${exc[@]}"
    else
      unzip "${flags[@]}" "$zip" "${inc[@]}" -d "$dest"
    fi
  else
    python3 - "$zip" "$dest" "$junk" "$@" <<'PY'
import fnmatch, os, shutil, sys, zipfile
zip_path, dest, junk, rest = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
inc, exc = (rest[: rest.index("--")], rest[rest.index("--") + 1 :]) if "--" in rest else (rest, [])
with zipfile.ZipFile(zip_path) as z:
    for info in z.infolist():
        name = info.filename
        if info.is_dir() or not any(fnmatch.fnmatchcase(name, p) for p in inc):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exc):
            continue
        target = os.path.join(dest, os.path.basename(name) if junk else name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(target, mode)
PY
  fi
}

WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"
echo "setup-libtorch: fetching torch==$VERSION and the CUDA runtime wheels into $WHEELS" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" \
  "torch==$VERSION" "nvidia-cuda-runtime~=13.0.0" "nvidia-cuda-cupti~=13.0.0"

TMP="$(mktemp -d "$CACHE/.libtorch-tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
torch_whl="$(ls "$WHEELS"/torch-"$VERSION"-*.whl | head -n 1)"
unzip_members "$torch_whl" "$TMP/wheel" 0 'torch/include/*' 'torch/lib/*' \
  -- 'torch/lib/libtorch_cuda*.so' 'torch/lib/libc10_cuda.so' 'torch/lib/libtorch_nvshmem.so' \
     'torch/lib/libtorch_python.so' 'torch/lib/libcaffe2_nvrtc.so'
mkdir -p "$TMP/libtorch"
mv "$TMP/wheel/torch/include" "$TMP/wheel/torch/lib" "$TMP/libtorch/"
for name in nvidia_cuda_runtime nvidia_cuda_cupti; do
  whl="$(ls "$WHEELS"/${name}-13.0.*.whl | sort -V | tail -n 1)"
  unzip_members "$whl" "$TMP/libtorch/lib" 1 'nvidia/cu13/lib/libcudart.so.13' 'nvidia/cu13/lib/libcupti.so.13' 2>/dev/null || true
done
for lib in libcudart.so.13 libcupti.so.13 libtorch_cpu.so libc10.so; do
  [ -f "$TMP/libtorch/lib/$lib" ] || { echo "setup-libtorch: $lib missing after extraction" >&2; exit 1; }
done
echo "$VERSION" > "$TMP/libtorch/build-version"
rm -rf "$DEST"
mv "$TMP/libtorch" "$DEST"
ln -sfn "$DEST" "$ROOT/.libtorch"
echo "setup-libtorch: libtorch $VERSION ready in $DEST" >&2
