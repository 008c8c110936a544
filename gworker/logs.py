"""Logging: every message of gworker goes to the ``gworker`` logger (or a child of
it, such as ``gworker.aio``).

gworker adds no handler: where the messages go is the application's
choice (``logging.basicConfig`` or its own configuration). Failures are logged
at ERROR with their traceback, a ``Locker`` that times out at CRITICAL,
starting a supervisor implicitly at INFO, lifecycle details at DEBUG.

:func:`set_debug` is atasker's switch for debug messages. atasker gated its
debug calls with a module flag; gworker's debug messages are ordinary
``logger.debug`` calls, so the switch sets the level of the ``gworker``
logger: ``DEBUG`` when on, back to the level it had before when off. A handler
must still let DEBUG records through for them to be seen.
"""
from __future__ import annotations

import logging
from typing import Optional

__all__ = ["logger", "set_debug"]

#: The logger of the whole package.
logger = logging.getLogger("gworker")

_level_before: Optional[int] = None


def set_debug(mode: bool = True) -> None:
    """Switch debug logging of the ``gworker`` logger on (``mode=True``) or off.

    On: the logger's level becomes ``DEBUG`` (its previous level is kept).
    Off: the previous level is restored (``NOTSET`` — inherit — if it was never
    changed). Calling it twice the same way changes nothing more.
    """
    global _level_before
    if mode:
        if _level_before is None:
            _level_before = logger.level
        logger.setLevel(logging.DEBUG)
    else:
        if _level_before is not None:
            logger.setLevel(_level_before)
            _level_before = None
