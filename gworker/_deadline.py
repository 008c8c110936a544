"""Deadlines: what every ``wait=`` and shutdown ``timeout`` turns into.

gworker's ``stop()`` methods take atasker's ``wait``: ``True`` waits for as
long as it takes, ``False`` does not wait, a number of seconds waits at most
that long. A :class:`Deadline` is that value parsed once, where it is given (a
bad value raises ``TypeError``/``ValueError`` naming the parameter), and turned
into a point in monotonic time. A shutdown that waits for several things in
turn — workers, then tasks, then aloops, then the process pool — asks the one
deadline how much is :meth:`~Deadline.remaining` before each wait, so that the
bound holds for the whole, not for each step.

``Deadline.from_wait(False)`` and ``Deadline.from_wait(0)`` both have nothing
remaining; :attr:`~Deadline.waits` tells them apart for the callers where
``False`` means "return at once, let it finish in the background" and ``0``
means "look once, then give up" (``Aloop.stop`` and ``TaskSupervisor.stop``).
"""
from __future__ import annotations

from time import monotonic
from typing import Any, Optional, Union

from ._checks import check_seconds

__all__ = ["Deadline"]


class Deadline:
    """A point in monotonic time to stop waiting at, or none (wait forever)."""

    __slots__ = ("at", "waits")

    def __init__(self, at: Optional[float], waits: bool = True) -> None:
        #: monotonic time of the deadline; None: no limit
        self.at = at
        #: False only for ``wait=False``: the caller asked not to wait at all
        self.waits = waits

    @classmethod
    def from_wait(cls, wait: Any, parameter: str = "wait") -> "Deadline":
        """Parse a ``wait=`` value: ``True`` (no limit), ``False`` or ``None``
        (do not wait: atasker tests the value's truth, so ``wait=None`` is
        atasker code that does not wait), or a non-negative number of seconds."""
        if wait is True:
            return cls(None)
        if wait is False or wait is None:
            return cls(monotonic(), waits=False)
        return cls.after(check_seconds(wait, parameter, allow_none=False))

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        """The deadline ``seconds`` from now (already checked by the caller)."""
        return cls(monotonic() + seconds)

    @classmethod
    def never(cls) -> "Deadline":
        """No limit."""
        return cls(None)

    def remaining(self) -> Optional[float]:
        """Seconds left (never negative); None when there is no limit."""
        at = self.at
        if at is None:
            return None
        return max(0.0, at - monotonic())

    def within(self, limit: float) -> float:
        """Seconds left, but at most ``limit``."""
        left = self.remaining()
        return limit if left is None else min(limit, left)

    def allows(self, seconds: float) -> bool:
        """True if waiting ``seconds`` more still ends by the deadline."""
        return self.at is None or monotonic() + seconds <= self.at

    def expired(self) -> bool:
        """True once the deadline has passed (never, without a limit)."""
        return self.at is not None and monotonic() >= self.at

    def as_wait(self) -> Union[bool, float]:
        """What is left, as a ``wait=`` value to hand on to another ``stop()``:
        ``True`` without a limit, ``False`` if this one does not wait, else
        the seconds remaining."""
        if not self.waits:
            return False
        left = self.remaining()
        return True if left is None else left

    def __repr__(self) -> str:
        if not self.waits:
            return "<Deadline: do not wait>"
        left = self.remaining()
        return "<Deadline: no limit>" if left is None else "<Deadline: %.3fs left>" % left
