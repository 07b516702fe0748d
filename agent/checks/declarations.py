"""How a check declares what it reports: typed facts, the row shapes of nested facts, and parameters.

A check family declares a `CheckSpec` in ``agent/checks/<family>/spec.py`` (like an osquery table
spec): its id, the platforms it supports, every fact it reports with a type and a description, and
for a fact that is a list, what each element is (a type, or the fields of a row object). Docs
(docs/checks/facts.md), the policy validator, the evaluator and the collector all read these
declarations; agent/checks/specs.py lists them by id.

This module and the spec modules import nothing of probes or collectors, so the collector (server/)
and the policy package can use them without loading the code that touches the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from agent.checks.messages import Message, english, message

# Fact types. "version" is a dotted version string compared numerically; "duration" is seconds.
FACT_TYPES = ("bool", "int", "number", "string", "version", "list", "object")
PLATFORMS = ("linux", "darwin", "windows")

# At most this many row problems are named per fact: one is enough to find the fault, a thousand
# would only make the reason unreadable.
MAX_ROW_PROBLEMS = 3


def _check_type(what: str, type_name: str) -> None:
    if type_name not in FACT_TYPES:
        raise ValueError(f"{what}: unknown type {type_name!r}; known: {', '.join(FACT_TYPES)}")


@dataclass(frozen=True)
class FieldSpec:
    """One field of the row objects of a list fact (a tunnel's ``up``, a product's ``name``).

    Every field may be null or left out: rows describe what the OS told, and older agents' rows
    lack fields added since. ``items`` gives the type of the elements of a field of type list.
    """

    name: str
    type: str
    description: str
    items: Optional[str] = None

    def __post_init__(self) -> None:
        _check_type(f"field {self.name}", self.type)
        if self.items is not None:
            if self.type != "list":
                raise ValueError(f"field {self.name}: items is for list fields, not {self.type}")
            _check_type(f"field {self.name} items", self.items)


@dataclass(frozen=True)
class FactSpec:
    name: str
    type: str
    description: str
    # "none" means the fact may be null (unknown) without the whole check being an error.
    nullable: bool = True
    # What a report of an agent that predates this fact means by leaving it out (evaluation only;
    # None: unknown, the rule says so). Lets a collector judge older agents' reports with a newer policy.
    absent: Any = None
    # A list fact: the type of each element (a list of names), or the fields of each row object
    # (a list of tunnels); never both.
    items: Optional[str] = None
    row: Tuple[FieldSpec, ...] = ()

    def __post_init__(self) -> None:
        _check_type(f"fact {self.name}", self.type)
        if (self.items is not None or self.row) and self.type != "list":
            raise ValueError(f"fact {self.name}: items and row are for list facts, not {self.type}")
        if self.items is not None and self.row:
            raise ValueError(f"fact {self.name}: give items (a list of values) or row (a list of objects), not both")
        if self.items is not None:
            _check_type(f"fact {self.name} items", self.items)
        names = [field.name for field in self.row]
        if len(set(names)) != len(names):
            raise ValueError(f"fact {self.name}: a row field is declared twice in {names}")


@dataclass(frozen=True)
class ParamSpec:
    """A policy input the collector needs (declared so the validator knows it is not a fact)."""

    name: str
    type: str  # "cidr_list"
    description: str
    # a rule of the check must give it; ``required`` says why (the validator's message)
    required: str = ""
    # list facts whose rows the evaluator reads to judge this parameter: their shape is checked first
    reads: Tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    description: str
    platforms: Tuple[str, ...]
    facts: Tuple[FactSpec, ...]
    params: Tuple[ParamSpec, ...] = ()

    def __post_init__(self) -> None:
        for param in self.params:
            for name in param.reads:
                fact = self.fact(name)
                if fact is None or fact.type != "list":
                    raise ValueError(f"check {self.id}: parameter {param.name} reads {name!r}, "
                                     "which is not a list fact of this check")

    def fact(self, name: str) -> Optional[FactSpec]:
        for spec in self.facts:
            if spec.name == name:
                return spec
        return None

    def param(self, name: str) -> Optional[ParamSpec]:
        for spec in self.params:
            if spec.name == name:
                return spec
        return None


# The JSON values each declared type admits (a bool is an int to Python, never to a declaration).
_PYTHON_TYPES: Mapping[str, Tuple[type, ...]] = {
    "bool": (bool,), "int": (int,), "number": (int, float), "string": (str,), "version": (str,),
    "list": (list,), "object": (dict,),
}


def type_ok(fact_type: str, value: Any) -> bool:
    """Whether ``value`` (not null) is of the declared type, as JSON gives it."""
    types = _PYTHON_TYPES.get(fact_type)
    if types is None or not isinstance(value, types):
        return False
    return fact_type == "bool" or not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _value_problems(check: str, fact: str, row: int, field: FieldSpec, value: Any) -> List[Message]:
    if not type_ok(field.type, value):
        return [message("fact_row_bad_field", check=check, fact=fact, row=row, field=field.name,
                        expected=field.type, found=_type_name(value))]
    if field.items is None:
        return []
    return [message("fact_row_bad_field", check=check, fact=fact, row=row, field=f"{field.name}[{index}]",
                    expected=field.items, found=_type_name(item))
            for index, item in enumerate(value) if item is not None and not type_ok(field.items, item)]


def row_problems(check: str, spec: FactSpec, value: Any) -> List[Message]:
    """What is wrong with the elements of list fact ``value`` against its declared items or row shape
    (at most `MAX_ROW_PROBLEMS`): each problem names the check, the fact, the row index and the field."""
    if not isinstance(value, list) or (spec.items is None and not spec.row):
        return []
    problems: List[Message] = []
    fields = {field.name: field for field in spec.row}
    for index, element in enumerate(value):
        if spec.items is not None:
            if element is not None and not type_ok(spec.items, element):
                problems.append(message("fact_item_bad_type", check=check, fact=spec.name, row=index,
                                        expected=spec.items, found=_type_name(element)))
        elif not isinstance(element, dict):
            problems.append(message("fact_row_not_object", check=check, fact=spec.name, row=index,
                                    found=_type_name(element)))
        else:
            for name, field_value in element.items():
                field = fields.get(name)
                if field is None:
                    problems.append(message("fact_row_unknown_field", check=check, fact=spec.name, row=index,
                                            field=name, declared=", ".join(fields)))
                elif field_value is not None:
                    problems.extend(_value_problems(check, spec.name, index, field, field_value))
        if len(problems) >= MAX_ROW_PROBLEMS:
            return problems[:MAX_ROW_PROBLEMS]
    return problems


def conform(spec: CheckSpec, facts: Mapping[str, Any]) -> List[str]:
    """Problems with ``facts`` against the declaration (unknown names, wrong types, malformed rows)."""
    problems = []
    for name, value in facts.items():
        fact = spec.fact(name)
        if fact is None:
            problems.append(f"{spec.id}: undeclared fact {name!r}")
        elif value is None:
            if not fact.nullable:
                problems.append(f"{spec.id}: fact {name!r} may not be null")
        elif not type_ok(fact.type, value):
            problems.append(f"{spec.id}: fact {name!r} should be {fact.type}, found {_type_name(value)}")
        else:
            problems.extend(english(problem) for problem in row_problems(spec.id, fact, value))
    return problems
