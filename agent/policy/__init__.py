"""Policy documents: load (YAML or JSON, with line numbers), validate against the check
declarations, and evaluate a report's facts into results. Shared by the agent and the collector.

The API (names others code against) is described in docs/policy.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

from agent.policy.evaluate import Result, evaluate, summarize
from agent.policy.loader import LineMap, parse_document, read_policy_text
from agent.policy.model import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_INTERVALS,
    LANGUAGES,
    POLICY_SCHEMA,
    SEVERITIES,
    STATUSES,
    Policy,
    PolicyError,
    Rule,
)
from agent.policy.validate import validate_document

__all__ = [
    "DEFAULT_GRACE_SECONDS", "DEFAULT_INTERVALS", "LANGUAGES", "POLICY_SCHEMA", "SEVERITIES", "STATUSES",
    "BASELINE_ID", "POLICIES_DIR", "Policy", "PolicyError", "Result", "Rule",
    "baseline", "check_params", "checks_used", "evaluate", "load_policy_file", "load_policy_text",
    "policy_from_json", "summarize", "validate_text",
]

BASELINE_ID = "ma-telework-baseline"
POLICIES_DIR = Path(__file__).resolve().parent.parent.parent / "policies"


def load_policy_text(text: str, source: str = "<policy>") -> Policy:
    """A Policy from YAML (needs PyYAML) or JSON text; PolicyError lists every problem with its line."""
    data, lines = parse_document(text, source)
    problems, policy = validate_document(data, lines)
    if problems or policy is None:
        raise PolicyError(problems or [f"{source}:1: invalid policy"])
    return policy


def load_policy_file(path: Union[str, Path]) -> Policy:
    """Read and validate a policy file; an unreadable file is a PolicyError too (one problem)."""
    try:
        text = read_policy_text(path)
    except (OSError, UnicodeError) as exc:
        raise PolicyError([f"{path}:0: cannot read the policy file: {exc}"]) from exc
    return load_policy_text(text, str(path))


def policy_from_json(obj: Mapping[str, Any], source: str = "<policy>") -> Policy:
    """A Policy from an already-parsed JSON document (a bundle's payload); validates it."""
    problems, policy = validate_document(obj, LineMap(source))
    if problems or policy is None:
        raise PolicyError(problems or [f"{source}:1: invalid policy"])
    return policy


def validate_text(text: str, source: str) -> List[str]:
    """Problems of a policy document as "SOURCE:LINE: message" lines; [] when it is valid."""
    try:
        load_policy_text(text, source)
    except PolicyError as exc:
        return list(exc.problems)
    return []


_BASELINE: List[Policy] = []


def baseline() -> Policy:
    """The bundled telework baseline (policies/ma-telework-baseline).

    Read from the generated JSON copy, which needs no PyYAML and is quicker to load; a test keeps
    it equal to the YAML source. The YAML is read only if the JSON copy is missing.
    """
    if not _BASELINE:
        json_path = POLICIES_DIR / f"{BASELINE_ID}.json"
        if json_path.exists():
            try:
                data = json.loads(json_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise PolicyError([f"{json_path}:1: cannot read the bundled baseline: {exc}"]) from exc
            _BASELINE.append(policy_from_json(data, str(json_path)))
        else:
            _BASELINE.append(load_policy_file(POLICIES_DIR / f"{BASELINE_ID}.yaml"))
    return _BASELINE[0]


def checks_used(policy: Policy) -> List[str]:
    """Check ids the policy's rules need, in first-use order."""
    seen: List[str] = []
    for rule in policy.rules:
        # a `when` on another check's fact ("vpn.tunnel_up") needs that check collected too
        for check in [rule.check] + [name.split(".", 1)[0] for name in rule.when if "." in name]:
            if check not in seen:
                seen.append(check)
    return seen


def check_params(policy: Policy) -> Dict[str, Dict[str, Any]]:
    """Check id -> params for its collector (validation guarantees rules of one check agree)."""
    params: Dict[str, Dict[str, Any]] = {}
    for rule in policy.rules:
        if rule.params:
            params.setdefault(rule.check, {}).update(json.loads(json.dumps(dict(rule.params))))
    return params
