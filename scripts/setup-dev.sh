#!/usr/bin/env bash
# Installs the system packages and the Python environment (.venv) the test suite needs.
# Idempotent: a second run only checks. Needs root (or sudo) for the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(openvpn chromium chromium-driver iproute2 nftables iptables msitools shellcheck
              dpkg-dev fakeroot debhelper rpm systemd wixl lintian nginx faketime util-linux
              dbus dbus-x11 dunst xvfb xauth libnotify-bin rsyslog rsyslog-gnutls curl postgresql haproxy)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: ready ($(.venv/bin/python --version))"
