#!/bin/sh
# Removes the Teleposture agent from this Mac (run as root: sudo sh uninstall.sh [--purge]).
# Without --purge the identity and outbox stay in /Library/Application Support/Teleposture, so a
# reinstall carries on as the same device; --purge deletes them too.
set -eu

LABEL=org.teleposture.agent
purge=no
case "${1:-}" in
    --purge) purge=yes ;;
    "") ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root (sudo sh $0 ${1:-})" >&2
    exit 2
fi

launchctl bootout "system/$LABEL" >/dev/null 2>&1 || true
rm -f "/Library/LaunchDaemons/$LABEL.plist"
rm -rf /Library/Teleposture
rm -f /etc/newsyslog.d/org.teleposture.agent.conf
if [ "$(readlink /usr/local/bin/teleposture-agent 2>/dev/null || true)" = \
     /Library/Teleposture/teleposture-agent/teleposture-agent ]; then
    rm -f /usr/local/bin/teleposture-agent
fi
pkgutil --forget "$LABEL" >/dev/null 2>&1 || true
if [ "$purge" = yes ]; then
    rm -rf "/Library/Application Support/Teleposture" /Library/Logs/Teleposture
    echo "Teleposture agent removed, with its identity, outbox and logs."
else
    echo "Teleposture agent removed; identity and outbox kept in /Library/Application Support/Teleposture."
fi
