"""`python -m agent.policy build|compile|schema`: generate the files derived from policy sources.

build            regenerate policies/ma-telework-baseline.json and policies/policy.schema.json
compile SRC OUT  write a YAML policy as the JSON document the agent and collector use
schema OUT       write the JSON Schema of policy documents
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, List, Optional

from agent.policy import BASELINE_ID, POLICIES_DIR, PolicyError, load_policy_file
from agent.policy.schema import policy_schema


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def compiled_text(source: Path) -> str:
    return dump(load_policy_file(source).to_json())


def schema_text() -> str:
    return dump(policy_schema())


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.policy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build")
    compile_cmd = sub.add_parser("compile")
    compile_cmd.add_argument("source", type=Path)
    compile_cmd.add_argument("output", type=Path)
    schema_cmd = sub.add_parser("schema")
    schema_cmd.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            outputs = [(POLICIES_DIR / f"{BASELINE_ID}.json", compiled_text(POLICIES_DIR / f"{BASELINE_ID}.yaml")),
                       (POLICIES_DIR / "policy.schema.json", schema_text())]
        elif args.command == "compile":
            outputs = [(args.output, compiled_text(args.source))]
        else:
            outputs = [(args.output, schema_text())]
    except PolicyError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    for path, text in outputs:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
