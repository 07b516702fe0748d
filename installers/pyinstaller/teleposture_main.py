"""Entry point of the bundled agent (PyInstaller, macOS and Windows packages).

`teleposture-agent windows-service` is how the Windows service control manager starts the agent
(see installers/windows/winservice.py); every other command line goes to the agent's own CLI.
"""

from __future__ import annotations

import sys


def main() -> int:
    if sys.platform == "win32" and sys.argv[1:2] == ["windows-service"]:
        import winservice

        return winservice.main()
    from agent.cli.main import main as agent_main

    return agent_main()


if __name__ == "__main__":
    sys.exit(main())
