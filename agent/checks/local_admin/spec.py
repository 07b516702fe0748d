"""Local administrator: what the check declares (imports nothing of probes or collectors)."""

from __future__ import annotations

from agent.checks.declarations import PLATFORMS, CheckSpec, FactSpec

SPEC = CheckSpec(
    id="local_admin",
    title="Signed-in employee without administrator rights",
    description=(
        "Whether the account of the employee signed in at the console has administrator rights: sudo rules "
        "granting every command (directly, through a group such as sudo, wheel or admin, or a User_Alias) on "
        "Linux; the admin group on macOS; the local Administrators group on Windows, nested domain groups "
        "included where Windows can resolve them. Not applicable when nobody is signed in."
    ),
    platforms=PLATFORMS,
    facts=(
        FactSpec("console_user", "string", "the account signed in at the console (graphical session)"),
        FactSpec("is_admin", "bool", "that account can act as administrator (null: cannot be told)"),
        FactSpec("admin_via", "list", "how it gets the rights: 'group sudo', 'sudoers: alice ALL=(ALL) ALL', "
                                      "'Administrators via CORP\\\\IT-Admins'",
                 items="string"),
        FactSpec("groups", "list", "the account's groups (Windows: the groups that are members of Administrators)",
                 items="string"),
        FactSpec("limited_rules", "list", "sudo rules that grant some commands only (not full administrator)",
                 items="string"),
    ),
)
