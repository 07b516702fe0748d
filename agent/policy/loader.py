"""Reading policy documents: YAML (with line numbers) or JSON, into plain data plus a line map.

PyYAML is an optional dependency of the agent (`pip install teleposture[yaml]`): it is imported
only when a YAML document is read. Policies that arrive from the collector, and the bundled
baseline, are JSON and need nothing beyond the standard library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from agent.policy.model import PolicyError

Path_ = Tuple[Union[str, int], ...]

YAML_MISSING = "reading YAML policies needs PyYAML: install it with `pip install teleposture[yaml]` (or give the policy as JSON)"


class LineMap:
    """Line numbers of the nodes of a document, by path (("rules", 2, "expect", "tunnel_up"))."""

    def __init__(self, source: str, lines: Optional[Dict[Path_, int]] = None) -> None:
        self.source = source
        self.lines: Dict[Path_, int] = lines or {}

    def line(self, path: Path_) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (1 when nothing is known)."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), 1)

    def at(self, path: Path_, message: str) -> str:
        return f"{self.source}:{self.line(path)}: {message}"


def looks_like_json(text: str) -> bool:
    return text.lstrip("\ufeff \t\r\n")[:1] in ("{", "[")


def parse_document(text: str, source: str) -> Tuple[Any, LineMap]:
    """Parse YAML or JSON text into plain data; raise PolicyError naming the line on a syntax error."""
    if looks_like_json(text):
        try:
            return _parse_json(text, source)
        except PolicyError as json_error:
            if source.lower().endswith(".json"):
                raise
            # YAML flow style (`{schema: ..., rules: [...]}`) also starts with a brace.
            try:
                return _parse_yaml(text, source)
            except PolicyError:
                raise json_error from None
    return _parse_yaml(text, source)


def _parse_json(text: str, source: str) -> Tuple[Any, LineMap]:
    try:
        data = json.loads(text.lstrip("\ufeff"), object_pairs_hook=_no_duplicate_pairs)
    except _DuplicateKey as exc:
        raise PolicyError([f"{source}:1: duplicate key {exc.key!r} in a JSON object"]) from exc
    except json.JSONDecodeError as exc:
        raise PolicyError([f"{source}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})"]) from exc
    except RecursionError as exc:
        raise PolicyError([f"{source}:1: JSON nested too deeply"]) from exc
    lines: Dict[Path_, int] = {}
    if "\n" in text.strip():
        # Pretty-printed JSON: borrow line numbers from the YAML composer when it is installed
        # (JSON is YAML for this purpose); the values themselves always come from json.loads.
        try:
            _, line_map = _parse_yaml(text, source)
            lines = line_map.lines
        except PolicyError:
            lines = {}
    return data, LineMap(source, lines)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_pairs(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _parse_yaml(text: str, source: str) -> Tuple[Any, LineMap]:
    try:
        import yaml
    except ImportError as exc:
        raise PolicyError([f"{source}:1: {YAML_MISSING}"]) from exc
    loader_class = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    try:
        node = yaml.compose(text, Loader=loader_class)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise PolicyError([f"{source}:{line}: YAML syntax error: {what}"]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}:1: not valid YAML: {exc}"]) from exc
    if node is None:
        raise PolicyError([f"{source}:1: the document is empty"])
    builder = _Builder(yaml, source)
    data = builder.build(node, ())
    if builder.problems:
        raise PolicyError(builder.problems)
    return data, LineMap(source, builder.lines)


class _Builder:
    """Turns a composed YAML node tree into plain data, noting the line of every key and item."""

    def __init__(self, yaml: Any, source: str) -> None:
        self.yaml = yaml
        self.source = source
        self.lines: Dict[Path_, int] = {}
        self.problems: List[str] = []
        self.constructor = yaml.SafeLoader("")
        self.depth = 0

    def build(self, node: Any, path: Path_) -> Any:
        yaml = self.yaml
        self.lines.setdefault(path, node.start_mark.line + 1)
        self.depth += 1
        try:
            if self.depth > 64:
                self.problems.append(f"{self.source}:{node.start_mark.line + 1}: document nested too deeply")
                return None
            if isinstance(node, yaml.MappingNode):
                out: Dict[str, Any] = {}
                for key_node, value_node in node.value:
                    key = self._scalar(key_node)
                    if not isinstance(key, (str, int, float, bool)) or key is None:
                        self.problems.append(f"{self.source}:{key_node.start_mark.line + 1}: "
                                             "mapping keys must be plain words")
                        continue
                    key = str(key).lower() if isinstance(key, bool) else str(key)
                    if key in out:
                        self.problems.append(f"{self.source}:{key_node.start_mark.line + 1}: "
                                             f"duplicate key {key!r} (first on line {self.lines[path + (key,)]})")
                        continue
                    self.lines[path + (key,)] = key_node.start_mark.line + 1
                    out[key] = self.build(value_node, path + (key,))
                return out
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[path + (index,)] = item.start_mark.line + 1
                    items.append(self.build(item, path + (index,)))
                return items
            return self._scalar(node)
        finally:
            self.depth -= 1

    def _scalar(self, node: Any) -> Any:
        if not isinstance(node, self.yaml.ScalarNode):
            return None
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (self.yaml.YAMLError, ValueError, TypeError, OverflowError):
            return node.value
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        # Dates, binary and other YAML-only types: keep the text as written.
        return str(node.value)


def read_policy_text(path: Union[str, Path]) -> str:
    """The text of a policy file; OSError/UnicodeError propagate (callers report "unreadable")."""
    return Path(path).read_text(encoding="utf-8")
