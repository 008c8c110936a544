"""Every live child of every pool in this process, and what must happen to
them at exit and in a forked process."""
from __future__ import annotations

import atexit
import os
import signal


#: Parent-side sockets of every live child of every pool in this process; a new
#: child closes its inherited copies (else a sibling would hold them open, and
#: neither EOF nor "parent gone" would ever be seen).
parent_sockets: set = set()
live_pids: set = set()
_atexit_registered = False


def register_atexit() -> None:
    # Done when the first pool is made, never at import.
    global _atexit_registered
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_kill_leftovers)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=forget_parent_sockets)


def forget_parent_sockets() -> None:
    # In any forked child (ours, multiprocessing's, a user's os.fork()): the
    # parent's ends of the pool sockets are not its business, and holding them
    # would keep the pool's children from seeing their parent go away.
    for sock in list(parent_sockets):
        try:
            sock.close()
        except OSError:
            pass
    parent_sockets.clear()
    live_pids.clear()


def _kill_leftovers() -> None:
    # At interpreter exit: children of pools nobody shut down get SIGTERM (they
    # would also leave on their own once they see the parent's sockets close).
    for pid in list(live_pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
