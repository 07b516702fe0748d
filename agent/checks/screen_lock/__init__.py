"""Screen lock: the declared facts and the per-platform collectors."""

from __future__ import annotations

from agent.checks.base import PLATFORMS, CheckFamily, CheckSpec, FactSpec, ParamSpec  # noqa: F401
from agent.checks.screen_lock import darwin, linux, windows

SPEC = CheckSpec(
    id="screen_lock",
    title="Screen lock",
    description=(
        "Whether every interactive session locks itself, with a password, after a short idle time. "
        "Without any graphical session the check does not apply."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("sessions", "list",
                 "per graphical session: {user, desktop, lock_enabled, idle_delay_seconds, source}"),
        FactSpec("lock_enabled", "bool", "every graphical session has a password lock enabled"),
        FactSpec("idle_delay_seconds", "int", "the longest idle time before locking across sessions (0 = never idles)"),
        FactSpec("enforced_by_policy", "bool", "a managed policy (profile, GPO, dconf lock) enforces the setting"),
    ),
)

FAMILY = CheckFamily(SPEC, {"linux": linux.collect, "darwin": darwin.collect, "windows": windows.collect})
