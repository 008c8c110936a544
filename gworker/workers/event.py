"""Event workers: one executor call each time the worker is triggered.

The worker's greenlet waits on a gevent ``Event``. A trigger is *accepted* when
no run is pending or in progress; from then until that run ends, further
triggers are ignored — unless ``force=True``, which asks for one more run right
after the current one (any number of forced triggers during one run coalesce
into that one extra run). There is no ``poll_delay`` pause after a run.
"""
from __future__ import annotations

from typing import Any

from gevent.event import Event

from .base import Halt
from .continuous import BackgroundAsyncWorker

__all__ = ["BackgroundEventWorker"]


class BackgroundEventWorker(BackgroundAsyncWorker):
    """Calls its executor once per accepted trigger (see the module docstring).

    A :class:`BackgroundAsyncWorker`, as in atasker (which ran every
    event-driven worker on an event loop); it waits for triggers, not
    ``poll_delay``."""

    holds_slot = True
    kind = "event"

    def __init__(self, *args: Any, e: Any = None, event: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event = Event()
        self._busy = False
        self._again = False

    def get_event_obj(self) -> Event:
        """The gevent ``Event`` the worker waits on."""
        return self._event

    def trigger_threadsafe(self, force: bool = False) -> None:
        """Trigger a run, from any greenlet or any OS thread (see ``force`` above)."""
        self.supervisor.call_soon_threadsafe(self._trigger, force)

    async def trigger(self, force: bool = False) -> None:
        """Trigger a run from a coroutine running on an aloop."""
        self._trigger(force)

    def _trigger(self, force: bool) -> None:
        # May run in a hub callback: only sets flags and the event.
        if not self._active:
            return
        if self._busy:
            if force:
                self._again = True
            return
        self._busy = True
        self._event.set()

    def _loop(self, gen: int) -> None:
        event = self._event
        try:
            while self._active and self._gen == gen:
                if not self._again:
                    self._park(event.wait)
                self._again = False
                event.clear()
                if not self._active:
                    break
                self._busy = True
                if not self._execute():
                    break
                self._busy = self._again
        except Halt:
            pass
        finally:
            self._busy = self._again = False
            self._finished(gen)
