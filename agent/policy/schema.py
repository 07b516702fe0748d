"""The JSON Schema of policy documents, generated from the check declarations (never hand-edited).

It describes the document's shape for editors and other tools; `validate` remains the authority
(it also checks cross-field rules such as warn below max and duplicate ids, and names lines).
"""

from __future__ import annotations

from typing import Any, Dict, List

from agent.checks.declarations import PLATFORMS, FactSpec
from agent.checks.specs import SPECS
from agent.policy.model import (
    DEFAULT_INTERVALS,
    LADDER_ACTIONS,
    LANGUAGES,
    PLATFORM_DEFAULT,
    POLICY_SCHEMA,
    SEVERITIES,
)
from agent.policy.validate import ID_PATTERN, VERSION_PATTERN
from common.settings import DURATION_PATTERN

SCHEMA_ID = "https://teleposture.invalid/schemas/policy/v1.json"

_NUMBER = {"type": "number"}
_TEXTS = {
    "type": "object",
    "required": list(LANGUAGES),
    "properties": {lang: {"type": "string", "minLength": 1} for lang in LANGUAGES},
    "additionalProperties": {"type": "string"},
}
_DURATION = {"oneOf": [{"type": "integer", "minimum": 0},
                       {"type": "string", "pattern": DURATION_PATTERN.pattern}]}


def _number_expectation(integer: bool, condition: bool) -> Dict[str, Any]:
    scalar = {"type": "integer"} if integer else _NUMBER
    bounds = {"min": _NUMBER, "max": _NUMBER} if condition else {"min": _NUMBER, "max": _NUMBER, "warn": _NUMBER}
    return {"oneOf": [
        scalar,
        {"type": "object", "minProperties": 1, "additionalProperties": False,
         "properties": bounds,
         "anyOf": [{"required": ["min"]}, {"required": ["max"]}]},
    ]}


def _version_expectation() -> Dict[str, Any]:
    version = {"type": "string", "pattern": VERSION_PATTERN.pattern}
    return {"type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {"min": version, "max": version, "min_build": {"type": "integer", "minimum": 0}}}


_EXPECTABLE = ("bool", "string", "int", "number", "version")


def _base_expectation(fact_type: str, condition: bool) -> Dict[str, Any]:
    if fact_type == "bool":
        return {"type": "boolean"}
    if fact_type == "string":
        return {"oneOf": [{"type": "string"},
                          {"type": "object", "required": ["in"], "additionalProperties": False,
                           "properties": {"in": {"type": "array", "minItems": 1, "items": {"type": "string"}}}}]}
    if fact_type in ("int", "number"):
        return _number_expectation(fact_type == "int", condition)
    return _version_expectation()


def _def_name(fact_type: str, condition: bool) -> str:
    # Only numbers differ in a `when` (no warn band); the other forms are shared.
    return f"{fact_type}_condition" if condition and fact_type in ("int", "number") else fact_type


def _expectation_defs() -> Dict[str, Any]:
    """One definition per expectation form (and its per-platform mapping), referenced by every fact of that type."""
    defs: Dict[str, Any] = {}
    for fact_type in _EXPECTABLE:
        for condition in (False, True):
            name = _def_name(fact_type, condition)
            if name in defs:
                continue
            # `default` covers the platforms not named, so it cannot stand alone.
            defs[name] = _base_expectation(fact_type, condition)
            defs[f"{name}_per_platform"] = {
                "type": "object", "minProperties": 1, "additionalProperties": False,
                "properties": {p: {"$ref": f"#/$defs/{name}"} for p in PLATFORMS + (PLATFORM_DEFAULT,)},
                "anyOf": [{"minProperties": 2}, {"not": {"required": [PLATFORM_DEFAULT]}}]}
    return defs


def fact_expectation(fact: FactSpec, condition: bool = False) -> Dict[str, Any]:
    """Schema of what a policy may expect of one declared fact (None-like {} never returned).

    ``condition``: the form a `when` precondition takes (no `warn`: a condition is met or not).
    """
    if not expectable(fact):
        return {"not": {}, "description": f"{fact.name} is a {fact.type}: not expectable"}
    name = _def_name(fact.type, condition)
    return {"description": fact.description,
            "anyOf": [{"$ref": f"#/$defs/{name}"}, {"$ref": f"#/$defs/{name}_per_platform"}]}


def expectable(fact: FactSpec) -> bool:
    return fact.type in _EXPECTABLE


def _rule_schema(check_id: str) -> Dict[str, Any]:
    spec = SPECS[check_id]
    params: Dict[str, Any] = {}
    for param in spec.params:
        if param.type == "cidr_list":
            params[param.name] = {"type": "array", "minItems": 1, "items": {"type": "string"},
                                  "description": param.description}
        else:
            params[param.name] = {"description": param.description}
    return {
        "if": {"properties": {"check": {"const": check_id}}, "required": ["check"]},
        "then": {"properties": {
            "expect": {"type": "object", "additionalProperties": False,
                       "properties": {f.name: fact_expectation(f) for f in spec.facts if expectable(f)}},
            "when": {"type": "object", "minProperties": 1, "additionalProperties": False,
                     # "check.fact": a condition on another check of the same report
                     "patternProperties": {r"^[a-z_]+\.[a-z_]+$": {}},
                     "properties": {f.name: fact_expectation(f, condition=True)
                                    for f in spec.facts if expectable(f)}},
            "params": {"type": "object", "additionalProperties": False, "properties": params},
        }},
    }


def policy_schema() -> Dict[str, Any]:
    checks: List[str] = sorted(SPECS)
    rule: Dict[str, Any] = {
        "type": "object",
        "required": ["id", "check", "severity", "title", "remediation"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN.pattern},
            "check": {"enum": checks},
            "severity": {"enum": list(SEVERITIES)},
            "grace": _DURATION,
            "when": {"type": "object",
                     "description": "precondition (same form as expect, no warn): where it is not met, "
                                    "the rule is not_applicable"},
            "expect": {"type": "object"},
            "params": {"type": "object"},
            "title": _TEXTS,
            "remediation": _TEXTS,
            "references": {"type": "array", "items": {"type": "string", "minLength": 1}},
        },
        "allOf": [_rule_schema(check_id) for check_id in checks],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Teleposture policy document",
        "description": "Generated by `python -m agent.policy build` from the check declarations in agent/checks.",
        "type": "object",
        "required": ["schema", "id", "version", "title", "rules"],
        "additionalProperties": False,
        "properties": {
            "schema": {"const": POLICY_SCHEMA},
            "id": {"type": "string", "pattern": ID_PATTERN.pattern},
            "version": {"type": "integer", "minimum": 1},
            "title": _TEXTS,
            "intervals": {"type": "object", "additionalProperties": False,
                          "properties": {name: _DURATION for name in DEFAULT_INTERVALS}},
            "rules": {"type": "array", "minItems": 1, "items": rule},
            "actions": {"type": "object", "additionalProperties": False,
                        "description": "the noncompliance ladder per severity (docs/actions.md)",
                        "properties": {severity: {"type": "array", "items": {
                            "type": "object", "required": ["after", "do"], "additionalProperties": False,
                            "properties": {"after": _DURATION, "do": {"enum": list(LADDER_ACTIONS)}}}}
                            for severity in SEVERITIES}},
        },
        "$defs": _expectation_defs(),
    }
