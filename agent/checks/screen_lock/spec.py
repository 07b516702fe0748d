"""Screen lock: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec, FieldSpec

SPEC = CheckSpec(
    id="screen_lock",
    title="Screen lock",
    description=(
        "Whether every interactive session locks itself, with a password, after a short idle time. "
        "Without any graphical session the check does not apply."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("sessions", "list", "the graphical sessions, one row each", row=(
            FieldSpec("session", "string", "Linux: the logind session id"),
            FieldSpec("user", "string", "the session's user"),
            FieldSpec("type", "string", "Linux: x11, wayland or mir"),
            FieldSpec("desktop", "string", "GNOME, KDE, XFCE ...; aqua on macOS, windows on Windows"),
            FieldSpec("lock_enabled", "bool", "the session locks itself with a password"),
            FieldSpec("idle_delay_seconds", "int", "idle time before it locks (0 = never idles)"),
            FieldSpec("source", "string", "where the settings were read (dconf key, file, registry value)"),
        )),
        FactSpec("lock_enabled", "bool", "every graphical session has a password lock enabled"),
        FactSpec("idle_delay_seconds", "int", "the longest idle time before locking across sessions (0 = never idles)"),
        FactSpec("enforced_by_policy", "bool", "a managed policy (profile, GPO, dconf lock) enforces the setting"),
    ),
)
