# Shared by cross/build, cross/test, cross/package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${1:-}"
if [ -z "$TARGET" ] || [ ! -f "targets/$TARGET/target.toml" ]; then
  echo "usage: $0 TARGET   (one of: $(ls targets | grep -v -e common -e README | tr '\n' ' '))" >&2
  exit 2
fi
field() { sed -n "s/^$1 *= *\"\([^\"]*\)\".*/\1/p" "targets/$TARGET/target.toml"; }
HOST="$(rustc -vV | sed -n 's/^host: //p')"
CARGO_CROSS=(--config cross/cargo-config.toml)
QEMU="$(field qemu)"
SYSROOT="$(field sysroot)"
# How to run a target binary on this host (empty for native).
if [ "$TARGET" != "$HOST" ] && [ -n "$QEMU" ]; then
  RUNNER="$QEMU -L $SYSROOT"
else
  RUNNER=""
fi
