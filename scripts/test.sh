#!/usr/bin/env bash
# Runs the test suite: fetches the real all-MiniLM-L6-v2 model (once, into .cache/) for the
# parity tests, then `cargo test`; then the kernel and MiniLM parity tests again with each
# lower instruction set forced (LECR_ISA), so every path this CPU can run is checked.
# The curator page's browser test drives Debian's `chromium` and the shared store's tests
# Debian's `postgresql`: each installed here with apt when missing (as root, or through sudo).
# The PostgreSQL index mode's tests run Debian's PostgreSQL 15 with pgvector built from Debian's
# source package (scripts/fetch-pgvector.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LECR_SKIP_BROWSER:-}" ] && [ -z "${CHROME:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (the curator page's browser test)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
# The shared store's tests start a throwaway PostgreSQL cluster (initdb + pg_ctl): Debian's
# server package, installed here when missing.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql (the shared store's tests)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
LECR_MINILM="$(./scripts/fetch-minilm.sh)"
# The PostgreSQL index mode's tests (`serve --index postgres`) need pgvector, which Debian 12
# does not package as a binary: built once from Debian's source package into .cache/.
LECR_PGVECTOR_BIN="$(./scripts/fetch-pgvector.sh)"
export LECR_MINILM LECR_PGVECTOR_BIN LECR_NO_PROGRESS=1
cargo test --release --all-targets "$@"
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
for f in avx512_vnni avx_vnni avx2; do
  case "$flags" in
    *" $f "*) ;;
    *) echo "note: this CPU has no $f: the kernels that need it are not tested here" ;;
  esac
done
for isa in avxvnni avx2 scalar; do
  echo "== kernels and MiniLM parity with LECR_ISA=$isa"
  LECR_ISA=$isa cargo test --release --lib kernels:: "$@"
  LECR_ISA=$isa cargo test --release --test encoder_parity "$@"
done
