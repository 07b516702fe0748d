"""Declared row shapes of nested facts, validated on the agent (conform, run_collector). The evaluator the
collector shares gives a rule over such rows an error naming check, fact, row and field: the corporate_routes
cases of tests/agent/test_evaluate.py::test_corporate_networks."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checks.base import ERROR, OK, CheckFamily, CheckOutcome, run_collector
from agent.checks.declarations import (
    MAX_ROW_PROBLEMS,
    PLATFORMS,
    CheckSpec,
    FactSpec,
    FieldSpec,
    ParamSpec,
    conform,
    row_problems,
)
from agent.checks.messages import english
from agent.checks.specs import SPECS
from agent.probes import Host, Recording, ReplayHost

TUNNELS = SPECS["vpn"].fact("tunnels")
CLIENTS = SPECS["vpn"].fact("vpn_clients")
VOLUMES = SPECS["disk_encryption"].fact("volumes")


def tunnel(**changes: Any) -> Dict[str, Any]:
    return {"name": "tun0", "kind": "tun", "up": True, "addresses": ["10.8.0.6/24"], **changes}


@pytest.mark.parametrize("fact, rows, expected", [
    # valid data: no problem, whatever the nulls and the fields older agents leave out
    (TUNNELS, [tunnel(), tunnel(name="wg0", kind="wireguard", addresses=[])], []),
    (TUNNELS, [tunnel(kind=None, addresses=None)], []),
    (TUNNELS, [{"name": "tun0"}], []),
    (TUNNELS, [], []),
    (CLIENTS, ["openvpn", "GlobalProtect"], []),
    (VOLUMES, [{"mount": "/", "chain": ["/dev/dm-0", "/dev/sda2"], "chains": [["a"], ["b"]], "fscrypt_policies": 2}],
     []),
    # a field of the wrong type
    (TUNNELS, [tunnel(), tunnel(up="yes")],
     ["vpn: fact tunnels, row 1: field up should be bool, found str"]),
    (TUNNELS, [tunnel(name=7)], ["vpn: fact tunnels, row 0: field name should be string, found int"]),
    # an int is not a bool, a bool is not an int
    (VOLUMES, [{"mount": "/", "encrypted": 1}],
     ["disk_encryption: fact volumes, row 0: field encrypted should be bool, found int"]),
    (VOLUMES, [{"mount": "/", "fscrypt_policies": True}],
     ["disk_encryption: fact volumes, row 0: field fscrypt_policies should be int, found bool"]),
    # an element of a list field
    (TUNNELS, [tunnel(addresses=["10.8.0.6/24", 6])],
     ["vpn: fact tunnels, row 0: field addresses[1] should be string, found int"]),
    # an unknown field
    (TUNNELS, [tunnel(), tunnel(), tunnel(mtu=1500)],
     ["vpn: fact tunnels, row 2: unknown field mtu (declared fields: name, kind, up, addresses)"]),
    # a row that is not an object
    (TUNNELS, ["tun0"], ["vpn: fact tunnels, row 0 should be an object, found str"]),
    (TUNNELS, [None], ["vpn: fact tunnels, row 0 should be an object, found NoneType"]),
    # a list of values with a value of another type
    (CLIENTS, ["openvpn", {"name": "wireguard"}],
     ["vpn: fact vpn_clients, item 1 should be string, found dict"]),
    # several problems, in order; never more than MAX_ROW_PROBLEMS
    (TUNNELS, [tunnel(up=1, kind=2)],
     ["vpn: fact tunnels, row 0: field kind should be string, found int",
      "vpn: fact tunnels, row 0: field up should be bool, found int"]),
    (TUNNELS, [tunnel(up="no")] * 10,
     [f"vpn: fact tunnels, row {i}: field up should be bool, found str" for i in range(MAX_ROW_PROBLEMS)]),
], ids=["valid", "nulls", "fields-left-out", "empty", "values", "nested-lists",
        "wrong-type", "wrong-type-name", "int-for-bool", "bool-for-int", "list-field-element", "unknown-field",
        "row-not-object", "row-null", "value-of-other-type", "two-problems", "capped"])
def test_row_problems(fact: FactSpec, rows: List[Any], expected: List[str]) -> None:
    check = next(spec.id for spec in SPECS.values() if fact in spec.facts)
    problems = row_problems(check, fact, rows)
    assert [english(problem) for problem in problems] == expected
    for problem in problems:  # every problem names where it is, as parameters the renderers translate around
        assert {"check", "fact", "row"} <= set(problem["params"])


@pytest.mark.parametrize("kwargs, problem", [
    ({"type": "list", "items": "whatever"}, "unknown type 'whatever'"),
    ({"type": "string", "items": "string"}, "items and row are for list facts"),
    ({"type": "int", "row": (FieldSpec("a", "int", ""),)}, "items and row are for list facts"),
    ({"type": "list", "items": "string", "row": (FieldSpec("a", "int", ""),)}, "not both"),
    ({"type": "list", "row": (FieldSpec("a", "int", ""), FieldSpec("a", "bool", ""))}, "declared twice"),
])
def test_a_malformed_declaration_is_refused(kwargs: Dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        FactSpec("fact", description="", **kwargs)


@pytest.mark.parametrize("reads", [("nothing",), ("count",)], ids=["undeclared", "not-a-list"])
def test_a_parameter_reads_list_facts_of_its_check(reads: Any) -> None:
    with pytest.raises(ValueError, match="is not a list fact of this check"):
        CheckSpec("demo", "Demo", "", PLATFORMS, (FactSpec("count", "int", ""),),
                  (ParamSpec("networks", "cidr_list", "", reads=reads),))


def test_field_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown type"):
        FieldSpec("a", "tuple", "")
    with pytest.raises(ValueError, match="items is for list fields"):
        FieldSpec("a", "string", "", items="string")


def test_every_nested_fact_declares_its_shape() -> None:
    # a list of objects documented only in prose could not be validated; every list says what it holds
    undeclared = [f"{spec.id}.{fact.name}" for spec in SPECS.values() for fact in spec.facts
                  if fact.type == "list" and fact.items is None and not fact.row]
    assert undeclared == []


# -- the agent side: a collector whose rows do not match is an error, as a wrong-typed fact is ------------

SPEC = CheckSpec("demo", "Demo", "a check for this test", PLATFORMS, (
    FactSpec("count", "int", "a number"),
    FactSpec("rows", "list", "rows", row=(FieldSpec("name", "string", "a name"), FieldSpec("on", "bool", "on"))),
))


def _family(facts: Mapping[str, Any]) -> CheckFamily:
    def collect(host: Host, params: Mapping[str, Any]) -> CheckOutcome:
        return CheckOutcome("demo", facts=dict(facts), evidence=["observed"])
    return CheckFamily(SPEC, {"linux": collect})


@pytest.mark.parametrize("facts, state, reason", [
    ({"count": 1, "rows": [{"name": "a", "on": True}, {"name": None}]}, OK, None),
    ({"count": "1", "rows": []}, ERROR, "internal error: demo: fact 'count' should be int, found str"),
    ({"count": 1, "rows": [{"name": "a", "on": "true"}]}, ERROR,
     "internal error: demo: fact rows, row 0: field on should be bool, found str"),
    ({"count": 1, "rows": [{"name": "a"}, {"name": "b", "colour": "red"}]}, ERROR,
     "internal error: demo: fact rows, row 1: unknown field colour (declared fields: name, on)"),
], ids=["valid", "wrong-type-fact", "wrong-type-field", "unknown-field"])
def test_run_collector_checks_rows_like_facts(facts: Dict[str, Any], state: str, reason: Any) -> None:
    host = ReplayHost(Recording(platform="linux"))
    outcome = run_collector(_family(facts), host)
    assert (outcome.state, outcome.reason) == (state, reason)
    if state == OK:
        assert outcome.facts == facts
        assert conform(SPEC, facts) == []
    else:
        assert outcome.evidence == ["observed"]


# -- never raises, whatever a device sends ------------------------------------------------------------

LIST_FACTS = [(spec.id, fact) for spec in SPECS.values() for fact in spec.facts if fact.type == "list"]
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=10)


@st.composite
def list_fact_and_rows(draw: st.DrawFn) -> Any:
    check, fact = draw(st.sampled_from(LIST_FACTS))
    # rows made mostly of declared fields, so the field checks are reached, with strays among them
    names = [field.name for field in fact.row] + ["stray"]
    row = st.dictionaries(st.sampled_from(names), _json, max_size=len(names))
    return check, fact, draw(st.lists(row | _json, max_size=6))


@settings(max_examples=300, deadline=None)
@given(list_fact_and_rows())
def test_row_problems_never_raise(case: Any) -> None:
    check, fact, rows = case
    problems = row_problems(check, fact, rows)
    assert len(problems) <= MAX_ROW_PROBLEMS
    for problem in problems:
        assert english(problem).startswith(f"{check}: fact {fact.name}, {'item' if fact.items else 'row'} "
                                           f"{problem['params']['row']}")
        assert 0 <= problem["params"]["row"] < len(rows)

