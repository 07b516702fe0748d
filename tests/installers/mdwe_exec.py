"""exec a command with memory-deny-write-execute on, the kernel's own form of the unit's
MemoryDenyWriteExecute=yes (prctl PR_SET_MDWE, Linux 6.3+): no mapping may become writable and
executable. Used by the installer tests to run the installed agent under that restriction."""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: mdwe_exec.py COMMAND [ARG...]")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_MDWE) failed: {os.strerror(ctypes.get_errno())} (needs Linux 6.3 or later)")
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
