#!/usr/bin/env bash
# Build the cellar Debian package with the standard tools (python3 -m venv, pip, dpkg-deb).
#   packaging/build-deb.sh [VERSION] [OUTDIR]      -> OUTDIR/cellar_VERSION_amd64.deb
# VERSION defaults to pyproject's, OUTDIR to dist/. cellar and its pinned dependencies go into a
# virtual environment at /opt/cellar, made with the host's /usr/bin/python3 (Debian's 3.11; the
# package depends on python3 (>= 3.11), (<< 3.12) because the venv holds cp311 wheels) and filled
# by pip from the package registry. The venv is built in a staging tree, then its absolute paths
# (script shebangs) are rewritten to /opt/cellar.
# CELLAR_DEB_COMPRESSION: dpkg-deb's -Z (default xz: smallest, but ~40 s of CPU for the 65 MB venv;
# zstd takes ~1 s for a 30% larger file and is read by dpkg >= 1.21.18: Debian 12, Ubuntu >= 21.10).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="${1:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n 1)}"
OUT="$(mkdir -p "${2:-$REPO/dist}" && cd "${2:-$REPO/dist}" && pwd)"
PY=/usr/bin/python3
PIP="$REPO/.venv/bin/pip"   # a pip that can target another interpreter (--python, pip >= 22.3)
[ -x "$PIP" ] || PIP="pip3"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "build-deb.sh: $PY must be Python 3.11" >&2; exit 2; }

stage="$(mktemp -d "${TMPDIR:-/tmp}/cellar-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
venv="$root/opt/cellar"

"$PY" -m venv --without-pip "$venv"
# Install from a clean copy of the tree (no build/ or egg-info leftovers from a developer's checkout), with the
# postgres extra (psycopg): the packaged worker saver may use a PostgreSQL database.
src="$stage/src"
mkdir -p "$src"
(cd "$REPO" && tar --exclude=./.venv --exclude=./.git --exclude=./dist --exclude=./build \
  --exclude='*.egg-info' --exclude='*.so' --exclude=__pycache__ --exclude='./.v2vm-run.*' -cf - .) | tar -C "$src" -xf -
"$PIP" --python "$venv/bin/python" install --quiet --disable-pip-version-check --no-warn-script-location "$src[postgres]"
rm -rf "$venv"/lib/python3*/site-packages/*.dist-info/direct_url.json
# Man pages and shell completion from the code being packaged (before the shebangs are rewritten below,
# while the venv's scripts still run from the staging path).
"$venv/bin/python" "$REPO/packaging/gen_man.py" "$stage/man" "$VERSION"
for page in "$stage"/man/*.1 "$stage"/man/*.8; do
  install -D -m 0644 "$page" "$root/usr/share/man/man${page##*.}/$(basename "$page")"
  gzip -9n "$root/usr/share/man/man${page##*.}/$(basename "$page")"
done
"$venv/bin/cellar" completion bash > "$stage/cellar.bash"
"$venv/bin/cellar" completion zsh > "$stage/_cellar"
"$venv/bin/cellar" completion fish > "$stage/cellar.fish"
install -D -m 0644 "$stage/cellar.bash" "$root/usr/share/bash-completion/completions/cellar"
install -D -m 0644 "$stage/_cellar" "$root/usr/share/zsh/vendor-completions/_cellar"
install -D -m 0644 "$stage/cellar.fish" "$root/usr/share/fish/vendor_completions.d/cellar.fish"
# Shebangs and activate scripts name the staging path; the package installs at /opt/cellar.
grep -rlI --null "$venv" "$venv/bin" | xargs -0 -r sed -i "s|$venv|/opt/cellar|g"

install -D -m 0644 "$REPO/packaging/systemd/cellard.service" "$root/lib/systemd/system/cellard.service"
install -D -m 0644 "$REPO/packaging/systemd/cellar-saver.service" "$root/lib/systemd/system/cellar-saver.service"
install -D -m 0644 "$REPO/packaging/default/cellar-saver" "$root/etc/default/cellar-saver"
install -D -m 0644 "$REPO/packaging/tmpfiles.d/cellar.conf" "$root/usr/lib/tmpfiles.d/cellar.conf"
install -D -m 0644 "$REPO/packaging/sysusers.d/cellar.conf" "$root/usr/lib/sysusers.d/cellar.conf"
install -D -m 0644 "$REPO/packaging/cellard.toml" "$root/etc/cellar/cellard.toml"
install -D -m 0755 "$REPO/packaging/cellard-service" "$root/usr/lib/cellar/cellard-service"
{ echo "#!/opt/cellar/bin/python"; cat "$REPO/packaging/shutdown_runtime.py"; } > "$stage/shutdown-runtime"
install -D -m 0755 "$stage/shutdown-runtime" "$root/usr/lib/cellar/shutdown-runtime"
install -D -m 0644 "$REPO/README.md" "$root/usr/share/doc/cellar/README.md"
install -D -m 0644 "$REPO/packaging/README.md" "$root/usr/share/doc/cellar/README.packaging.md"
install -D -m 0644 "$REPO/packaging/grafana/cellar.json" "$root/usr/share/doc/cellar/grafana/cellar.json"
install -d "$root/usr/bin" "$root/usr/sbin"
ln -s /opt/cellar/bin/cellar "$root/usr/bin/cellar"
ln -s /opt/cellar/bin/cellar-saver "$root/usr/bin/cellar-saver"
ln -s /opt/cellar/bin/cellard "$root/usr/sbin/cellard"

install -d "$root/DEBIAN"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$VERSION/" -e "s/@SIZE@/$size/" "$REPO/packaging/debian/control.in" > "$root/DEBIAN/control"
printf '%s\n' /etc/cellar/cellard.toml /etc/default/cellar-saver > "$root/DEBIAN/conffiles"
install -m 0755 "$REPO/packaging/debian/postinst" "$REPO/packaging/debian/prerm" "$REPO/packaging/debian/postrm" "$root/DEBIAN/"

deb="$OUT/cellar_${VERSION}_amd64.deb"
dpkg-deb -Z"${CELLAR_DEB_COMPRESSION:-xz}" --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
