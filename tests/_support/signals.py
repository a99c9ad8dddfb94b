"""Child processes that a test interrupts with Ctrl-C (SIGINT) as a terminal would."""

from __future__ import annotations

import signal
import subprocess


def popen_interruptible(cmd, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **kwargs)`` with SIGINT at its default in the child.

    An ignored SIGINT survives ``exec``: when something in the test process has set it to ``SIG_IGN``
    (some libraries do, for their own children), Python in the child would never raise
    KeyboardInterrupt and a Ctrl-C test would see the command run to its end.  A user's terminal
    delivers Ctrl-C to a foreground command, so the child starts with SIGINT at its default here.
    (Handlers, unlike ``SIG_IGN``, are reset by ``exec``: setting one just for the fork is enough.)
    """
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(cmd, **kwargs)
    finally:
        signal.signal(signal.SIGINT, old)
