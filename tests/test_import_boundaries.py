"""The collector and the policy package load check declarations, never probes, collectors or the agent service.

DESIGN.md: server/ may import agent.protocol, agent.policy, the checks' declarations and the catalogues
(agent.i18n), nothing else of agent/ (common/ holds the standard-library helpers all three parts share).
Each case imports in a fresh interpreter and lists what of agent/ ended up in sys.modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Set

import pytest

from agent.checks.specs import SPECS

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "agent"

# What of agent/ a collector or the policy package may load: the wire protocol, the policy package and
# the declarations (each family package is empty; its spec.py declares; lifecycle.py is the OS support
# table the validator checks a policy's additions against), and the translation catalogues the dashboard
# shares with the agent (agent.i18n itself, not the words only the command line uses).
ALLOWED_EXACT = {
    "agent", "agent.protocol", "agent.i18n", "agent.checks", "agent.checks.declarations", "agent.checks.specs",
    "agent.checks.messages", "agent.checks.os_identity.lifecycle",
    *(f"agent.checks.{check}" for check in SPECS), *(f"agent.checks.{check}.spec" for check in SPECS),
}
ALLOWED_PACKAGES = ("agent.policy",)


def allowed(name: str) -> bool:
    return name in ALLOWED_EXACT or any(name == package or name.startswith(package + ".")
                                        for package in ALLOWED_PACKAGES)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def forbidden_modules() -> Set[str]:
    """Every module of agent/ on disk that is neither allowed nor part of the policy package: probes,
    the collector registry and every platform collector, the Windows batch, the service and the CLI."""
    names = {_module_name(path) for path in AGENT.rglob("*.py")}
    return {name for name in names if not allowed(name)}


def loaded_agent_modules(code: str) -> List[str]:
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'agent')))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


IMPORT_ALL_OF_SERVER = """
import importlib, pkgutil
import server, server.app
for info in pkgutil.walk_packages(server.__path__, "server."):
    if ".migrations" not in info.name:
        importlib.import_module(info.name)
"""

IMPORT_ALL_OF_POLICY = """
import importlib, pkgutil
import agent.policy
for info in pkgutil.walk_packages(agent.policy.__path__, "agent.policy."):
    if info.name != "agent.policy.__main__":
        importlib.import_module(info.name)
"""


def test_the_forbidden_list_names_what_it_must() -> None:
    # A wrong path computation would make the boundary tests pass vacuously.
    forbidden = forbidden_modules()
    assert {"agent.probes", "agent.checks.collectors", "agent.checks.base", "agent.checks._windows_batch",
            "agent.checks.vpn.linux", "agent.checks.antivirus.windows", "agent.checks.os_identity.support"} <= forbidden
    assert any(name.startswith("agent.cli.main") for name in forbidden)
    assert not forbidden & ALLOWED_EXACT


@pytest.mark.parametrize("case, code", [
    ("server.app", "import server.app"),
    ("every module of server/", IMPORT_ALL_OF_SERVER),
    ("agent.policy", "import agent.policy"),
    ("every module of agent.policy", IMPORT_ALL_OF_POLICY),
    ("the declarations registry", "import agent.checks.specs"),
])
def test_loads_no_probe_collector_or_service_module(case: str, code: str) -> None:
    loaded = set(loaded_agent_modules(code))
    assert not loaded & forbidden_modules(), f"{case} loads {sorted(loaded & forbidden_modules())}"
    unexpected = {name for name in loaded if not allowed(name)}
    assert not unexpected, f"{case} loads modules outside the declarations: {sorted(unexpected)}"
    # and it does read the declarations (what the boundary is for)
    if case != "the declarations registry":
        assert "agent.checks.specs" in loaded


def test_the_agent_side_does_load_the_collectors() -> None:
    # The same measurement on the agent's collector registry: the test above would notice a collector.
    loaded = set(loaded_agent_modules("import agent.checks.collectors"))
    assert {"agent.probes", "agent.checks.vpn.linux", "agent.checks._windows_batch"} <= loaded
