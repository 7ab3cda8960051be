#!/usr/bin/env bash
# Print the path of a cached tarball of a fresh Debian root (bookworm, minbase + python3), building it
# with debootstrap from Debian's archive on first use. Tests extract it into a temp dir to get a
# pristine root in a second or two instead of a two-minute debootstrap on every run.
#   packaging/debian-root.sh            -> /var/cache/cellar-ci/debian-root/bookworm-python3.tar.gz
# Environment: CELLAR_DEBIAN_MIRROR (default http://deb.debian.org/debian), CELLAR_ROOT_CACHE (dir).
set -euo pipefail
SUITE=bookworm
MIRROR="${CELLAR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${CELLAR_ROOT_CACHE:-/var/cache/cellar-ci/debian-root}"
TARBALL="$CACHE/$SUITE-python3.tar.gz"
if [ -s "$TARBALL" ]; then echo "$TARBALL"; exit 0; fi

if ! command -v debootstrap >/dev/null; then
  # Wait for another apt/dpkg run (a CI step installing its own tools) instead of failing at once.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >&2
fi
mkdir -p "$CACHE"
work="$(mktemp -d "$CACHE/build.XXXXXX")"
cleanup() {
  # An interrupted debootstrap leaves proc/sys (or a /dev bind) mounted in the target: unmount them,
  # and never let rm cross into a mount.
  awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r \
    | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
# minbase + python3 (the package's only dependency) + procps (ps/pgrep for the operator, not needed by cellar).
debootstrap --variant=minbase --include=python3,procps "$SUITE" "$work/root" "$MIRROR" >&2
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar -C "$work/root" -czf "$work/root.tar.gz" .
mv "$work/root.tar.gz" "$TARBALL"
echo "$TARBALL"
