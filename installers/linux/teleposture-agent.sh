#!/bin/sh
# /usr/bin/teleposture-agent: runs the agent installed in /opt/teleposture/venv (the package builds
# that environment at installation; without it, say how to repair rather than fail obscurely).
set -eu

AGENT=/opt/teleposture/venv/bin/teleposture-agent

if [ ! -x "$AGENT" ]; then
    echo "teleposture-agent: $AGENT is missing: the package is not fully installed." >&2
    echo "Finish or repeat the installation (dpkg --configure -a, or reinstall the package)." >&2
    exit 2
fi
exec "$AGENT" "$@"
