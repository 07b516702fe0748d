"""Driver for the SIGKILL loop: imports the agent once, then forks a real `teleposture-agent run` per request.

Forking skips the ~1 s interpreter start and imports per agent process, so the test can kill 50+ working
agents in seconds. Protocol on stdin/stdout: each line "go" forks a child running ``agent.cli.main.main(argv)``
and prints its pid; the test SIGKILLs it at a random moment; the driver reaps it and prints "reaped <status>".
"""

from __future__ import annotations

import os
import sys

import agent.checks.cycle  # noqa: F401 - imported before forking, like everything the child needs
import agent.cli.main
import agent.service.core  # noqa: F401
import agent.service.scheduler  # noqa: F401


def main() -> int:
    argv = sys.argv[1:]
    for line in sys.stdin:
        if line.strip() != "go":
            break
        pid = os.fork()
        if pid == 0:
            try:
                code = agent.cli.main.main(argv)
            finally:
                os._exit(3)
            os._exit(code)  # pragma: no cover
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"reaped {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
