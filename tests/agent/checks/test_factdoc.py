"""docs/checks/facts.md is generated from the declarations and kept current."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from agent.checks import factdoc
from agent.checks.declarations import FactSpec, FieldSpec
from agent.checks.specs import SPECS


def test_committed_doc_is_what_the_declarations_give() -> None:
    assert factdoc.DOC_PATH.read_text(encoding="utf-8") == factdoc.render(SPECS.values()), (
        f"docs/checks/facts.md is stale: run `{factdoc.COMMAND}` and commit the result")


def test_the_check_option_agrees() -> None:
    done = subprocess.run([sys.executable, "-m", "agent.checks.factdoc", "--check"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_every_check_fact_field_and_param_is_documented() -> None:
    text = factdoc.render(SPECS.values())
    for spec in SPECS.values():
        assert f"\n## {spec.id}\n" in text
        for fact in spec.facts:
            assert f"| `{fact.name}` |" in text
            for field in fact.row:
                assert f"| `{field.name}` |" in text
        for param in spec.params:
            assert f"| `{param.name}` |" in text


def test_a_changed_declaration_changes_the_doc() -> None:
    # What makes the first test fail when someone edits a spec.py and forgets the doc.
    vpn = SPECS["vpn"]
    tunnels = vpn.fact("tunnels")
    assert tunnels is not None
    widened = dataclasses.replace(tunnels, row=tunnels.row + (FieldSpec("mtu", "int", "the tunnel's MTU"),))
    changed = dataclasses.replace(vpn, facts=tuple(widened if f is tunnels else f for f in vpn.facts))
    specs = [changed if spec is vpn else spec for spec in SPECS.values()]
    rendered = factdoc.render(specs)
    assert rendered != factdoc.render(SPECS.values())
    assert "| `mtu` | int | the tunnel's MTU |" in rendered


def test_cells_escape_the_table_separator() -> None:
    line = factdoc._fact_line(FactSpec("state", "string", "on | off", nullable=False))
    assert line == "| `state` | string | on \\| off (never null) |"
