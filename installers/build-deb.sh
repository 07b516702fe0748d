#!/usr/bin/env bash
# Builds the teleposture-agent .deb with Debian's own tools (dpkg-buildpackage + debhelper).
#
# usage: installers/build-deb.sh [--version DEBVERSION] [--out DIR] [--wheelhouse DIR]
#   --version     Debian version (default: the agent's version from agent/__init__.py, revision -1)
#   --out         where the .deb goes (default: dist/)
#   --wheelhouse  reuse wheels built by installers/build-wheelhouse.sh instead of building them
# Needs: dpkg-dev, debhelper, python3-pip (and PyPI access when no wheelhouse is given).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
version=""
out="$repo/dist"
wheelhouse=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --version) version=${2:?--version needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --wheelhouse) wheelhouse=${2:?--wheelhouse needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "build-deb: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
for tool in dpkg-buildpackage dh; do
    command -v "$tool" >/dev/null || {
        echo "build-deb: $tool not found; install dpkg-dev and debhelper (apt-get install dpkg-dev debhelper)" >&2
        exit 2; }
done
if [ -z "$version" ]; then
    agent_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/agent/__init__.py")
    [ -n "$agent_version" ] || { echo "build-deb: no __version__ in agent/__init__.py" >&2; exit 2; }
    version="$agent_version-1"
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
src="$stage/teleposture-agent-${version%%-*}"
mkdir -p "$src/wheels" "$src/linux"

if [ -n "$wheelhouse" ]; then
    [ -f "$wheelhouse/python-abi" ] || {
        echo "build-deb: $wheelhouse has no python-abi file: build it with installers/build-wheelhouse.sh" >&2; exit 2; }
else
    wheelhouse="$stage/wheelhouse"
    "$repo/installers/build-wheelhouse.sh" "$wheelhouse"
fi
cp "$wheelhouse"/*.whl "$src/wheels/"
cp "$wheelhouse/python-abi" "$src/python-abi"

cp -r "$repo/installers/linux/debian" "$src/debian"
cp "$repo/installers/linux/teleposture-agent.service" "$src/debian/teleposture-agent.service"
cp "$repo/installers/linux/teleposture-agent.sh" "$repo/installers/linux/teleposture-venv" \
   "$repo/installers/linux/teleposture-enroll" "$repo/installers/linux/agent.toml" "$src/linux/"
cp "$repo/installers/README.md" "$src/README.md"

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat > "$src/debian/changelog" <<CHANGELOG
teleposture-agent ($version) unstable; urgency=medium

  * Built from teleposture commit $commit.

 -- Teleposture maintainers <teleposture@example.org>  $(date -R)
CHANGELOG

(cd "$src" && dpkg-buildpackage --build=binary --no-sign -uc -us >"$stage/build.log" 2>&1) || {
    tail -40 "$stage/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (last lines above)" >&2
    exit 1
}
mkdir -p "$out"
deb=$(find "$stage" -maxdepth 1 -name "teleposture-agent_${version}_*.deb" | head -1)
[ -n "$deb" ] || { echo "build-deb: dpkg-buildpackage produced no .deb" >&2; exit 1; }
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
