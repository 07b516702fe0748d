#!/usr/bin/env bash
# Builds the teleposture-agent .rpm with rpmbuild (on Debian: apt-get install rpm).
#
# usage: installers/build-rpm.sh [--version VERSION] [--release N] [--out DIR] [--wheelhouse DIR]
#   --version     RPM version (default: the agent's version from agent/__init__.py)
#   --release     RPM release (default: 1)
#   --out         where the .rpm goes (default: dist/)
#   --wheelhouse  reuse wheels built by installers/build-wheelhouse.sh instead of building them
# Build on the target distribution (or with PYTHON= its interpreter): binary wheels and the
# python(abi) requirement follow the Python that builds the wheelhouse.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
version=""
release=1
out="$repo/dist"
wheelhouse=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --version) version=${2:?--version needs a value}; shift 2 ;;
        --release) release=${2:?--release needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --wheelhouse) wheelhouse=${2:?--wheelhouse needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build-rpm: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
command -v rpmbuild >/dev/null || {
    echo "build-rpm: rpmbuild not found; install it (Debian: apt-get install rpm; Fedora: dnf install rpm-build)" >&2
    exit 2; }
if [ -z "$version" ]; then
    version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/agent/__init__.py")
    [ -n "$version" ] || { echo "build-rpm: no __version__ in agent/__init__.py" >&2; exit 2; }
fi
case "$version$release" in
    *-*) echo "build-rpm: RPM version and release may not contain '-' (found $version, $release)" >&2; exit 2 ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/sources/wheels"
if [ -n "$wheelhouse" ]; then
    [ -f "$wheelhouse/python-abi" ] || {
        echo "build-rpm: $wheelhouse has no python-abi file: build it with installers/build-wheelhouse.sh" >&2; exit 2; }
else
    wheelhouse="$stage/wheelhouse"
    "$repo/installers/build-wheelhouse.sh" "$wheelhouse"
fi
cp "$wheelhouse"/*.whl "$stage/sources/wheels/"
linux="$repo/installers/linux"
cp "$linux/teleposture-agent.service" "$linux/teleposture-agent.sh" "$linux/teleposture-venv" \
   "$linux/teleposture-enroll" "$linux/agent.toml" "$repo/installers/README.md" "$stage/sources/"

rpmbuild -bb "$linux/rpm/teleposture-agent.spec" \
    --define "_topdir $stage/rpmbuild" \
    --define "_sourcedir $stage/sources" \
    --define "pkg_version $version" \
    --define "pkg_release $release" \
    --define "python_abi $(cat "$wheelhouse/python-abi")" >"$stage/build.log" 2>&1 || {
    tail -40 "$stage/build.log" >&2
    echo "build-rpm: rpmbuild failed (last lines above)" >&2
    exit 1
}
rpm=$(find "$stage/rpmbuild/RPMS" -name "teleposture-agent-$version-$release.*.rpm" | head -1)
[ -n "$rpm" ] || { echo "build-rpm: rpmbuild produced no .rpm" >&2; exit 1; }
mkdir -p "$out"
cp "$rpm" "$out/"
echo "$out/$(basename "$rpm")"
