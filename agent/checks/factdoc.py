"""`python -m agent.checks.factdoc [--check]`: docs/checks/facts.md, generated from the check declarations.

The per-check reference of facts (types, nulls, row shapes) and policy parameters is never written by
hand: a second copy would drift from agent/checks/<family>/spec.py. tests/agent/checks/test_factdoc.py
fails when the committed file differs from what this renders.

--check   write nothing; exit 1 when docs/checks/facts.md is not what the declarations give
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, List, Optional

from agent.checks.declarations import CheckSpec, FactSpec, FieldSpec
from agent.checks.specs import SPECS

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "checks" / "facts.md"
COMMAND = "python -m agent.checks.factdoc"


def _cell(text: str) -> str:
    # A description may hold a '|' (a shell pipe in a probe name): it would end the table cell.
    return text.replace("|", "\\|").replace("\n", " ")


def _type(spec: FactSpec | FieldSpec) -> str:
    if isinstance(spec, FactSpec) and spec.row:
        return "list of rows"
    return f"list of {spec.items}" if spec.items else spec.type


def _fact_line(fact: FactSpec) -> str:
    notes = [] if fact.nullable else ["never null"]
    if fact.absent is not None:
        notes.append(f"absent in older agents' reports: read as `{fact.absent}`")
    description = fact.description + (f" ({'; '.join(notes)})" if notes else "")
    return f"| `{fact.name}` | {_type(fact)} | {_cell(description)} |"


def _rows(fact: FactSpec) -> List[str]:
    lines = ["", f"Rows of `{fact.name}` (every field may be null or absent; any other field is an error):", "",
             "| field | type | description |", "|---|---|---|"]
    lines.extend(f"| `{field.name}` | {_type(field)} | {_cell(field.description)} |" for field in fact.row)
    return lines


def _check(spec: CheckSpec) -> List[str]:
    lines = [f"## {spec.id}", "", f"**{spec.title}.** {spec.description}", "",
             f"Platforms: {', '.join(spec.platforms)}.", "",
             "| fact | type | description |", "|---|---|---|"]
    lines.extend(_fact_line(fact) for fact in spec.facts)
    for fact in spec.facts:
        if fact.row:
            lines.extend(_rows(fact))
    if spec.params:
        lines.extend(["", "Policy parameters (`params` of a rule on this check):", "",
                      "| parameter | type | description |", "|---|---|---|"])
        for param in spec.params:
            required = f" Required: {param.required}." if param.required else ""
            reads = f" Judged on the rows of {', '.join(param.reads)}." if param.reads else ""
            description = f"{param.description}.{required}{reads}"
            lines.append(f"| `{param.name}` | {param.type} | {_cell(description)} |")
    return lines + [""]


def render(specs: Iterable[CheckSpec]) -> str:
    specs = list(specs)
    lines = [
        "# Facts of every check",
        "",
        f"<!-- Generated from agent/checks/<family>/spec.py by `{COMMAND}`: do not edit by hand. -->",
        "",
        "What each check reports, as its declaration says: the policy validator, the evaluator and the",
        "collector read the same declarations. A fact may be null (unknown: a rule on it is an `error`,",
        "never a guess) unless it says otherwise. A list fact says what it holds: values of one type, or",
        "rows whose fields are declared; a row with a field of the wrong type or an undeclared field makes",
        "the agent's check an `error`, and a rule that reads the rows (the VPN rule's `corporate_routes`)",
        "an `error` naming the check, the fact, the row (counted from 0) and the field. How each platform",
        "collects the facts: linux.md, linux-patches-vpn.md, macos.md, windows.md and posture-v3.md.",
        "",
        "Checks: " + ", ".join(f"[{spec.id}](#{spec.id})" for spec in specs) + ".",
        "",
    ]
    for spec in specs:
        lines.extend(_check(spec))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = render(SPECS.values())
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    if args.check:
        if current != text:
            print(f"{DOC_PATH} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
