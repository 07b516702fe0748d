#!/usr/bin/env bash
# Builds the Teleposture agent installer package for macOS (runs on macOS: pkgbuild, productbuild).
#
# usage: installers/macos/build-pkg.sh [--version VERSION] [--out DIR] [--sign IDENTITY]
#   --version  package version (default: the agent's version from agent/__init__.py)
#   --out      where the .pkg goes (default: dist/)
#   --sign     "Developer ID Installer: ..." identity to sign the product archive with
#              (or env TELEPOSTURE_PKG_SIGN_IDENTITY); unsigned otherwise
# PYTHON (default python3) builds a throwaway venv with the agent and PyInstaller; the bundle carries
# that Python, so target Macs need none. Build once per architecture (arm64, x86_64).
#
# Payload: /Library/Teleposture (the bundle and helper scripts, root:wheel, not writable by users),
# /Library/LaunchDaemons/org.teleposture.agent.plist, /etc/newsyslog.d/org.teleposture.agent.conf.
# State and config: /Library/Application Support/Teleposture (0700, created by postinstall).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=""
out="$repo/dist"
sign=${TELEPOSTURE_PKG_SIGN_IDENTITY:-}
while [ "$#" -gt 0 ]; do
    case "$1" in
        --version) version=${2:?--version needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --sign) sign=${2:?--sign needs an identity}; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "build-pkg: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
if [ "$(uname -s)" != Darwin ]; then
    echo "build-pkg: pkgbuild and productbuild exist only on macOS; run this on a Mac or a macOS CI runner" >&2
    exit 2
fi
for tool in pkgbuild productbuild; do
    command -v "$tool" >/dev/null || { echo "build-pkg: $tool not found (install the Xcode command line tools)" >&2; exit 2; }
done
if [ -z "$version" ]; then
    version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/agent/__init__.py")
    [ -n "$version" ] || { echo "build-pkg: no __version__ in agent/__init__.py" >&2; exit 2; }
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# 1. The self-contained agent (PyInstaller one-folder bundle).
"${PYTHON:-python3}" -m venv "$stage/venv"
"$stage/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${repo}[yaml]" pyinstaller
(cd "$repo" && "$stage/venv/bin/python" -m PyInstaller --noconfirm --clean --distpath "$stage/dist" \
    --workpath "$stage/work" "$repo/installers/pyinstaller/teleposture-agent.spec")
"$stage/dist/teleposture-agent/teleposture-agent" --version

# 2. The payload, laid out as on the target disk.
root="$stage/root"
install -d -m 0755 "$root/Library/Teleposture/libexec" "$root/Library/LaunchDaemons" "$root/private/etc/newsyslog.d"
cp -R "$stage/dist/teleposture-agent" "$root/Library/Teleposture/teleposture-agent"
install -m 0755 "$here/teleposture-service" "$repo/installers/linux/teleposture-enroll" "$root/Library/Teleposture/libexec/"
install -m 0755 "$here/uninstall.sh" "$root/Library/Teleposture/uninstall.sh"
install -m 0644 "$here/org.teleposture.agent.plist" "$root/Library/LaunchDaemons/"
install -m 0644 "$here/newsyslog-teleposture.conf" "$root/private/etc/newsyslog.d/org.teleposture.agent.conf"
chmod -R go-w "$root"

# 3. Component package (payload + pre/postinstall), then the distributable product archive.
pkgbuild --root "$root" --identifier org.teleposture.agent --version "$version" \
    --scripts "$here/scripts" --ownership recommended --install-location / "$stage/teleposture-agent-component.pkg"
sed "s/@VERSION@/$version/g" "$here/distribution.xml" > "$stage/distribution.xml"
mkdir -p "$out"
product="$out/teleposture-agent-$version-$(uname -m).pkg"
sign_args=()
if [ -n "$sign" ]; then
    sign_args=(--sign "$sign")
fi
# ${a[@]+...}: macOS ships bash 3.2, where an empty array is "unbound" under set -u.
productbuild --distribution "$stage/distribution.xml" --package-path "$stage" ${sign_args[@]+"${sign_args[@]}"} "$product"
echo "$product"
