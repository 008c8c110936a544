"""Event workers: one executor call each time the worker is triggered.

The worker's greenlet waits on a gevent ``Event``. A trigger is *accepted* when
no run is pending or in progress; from then until that run ends, further
triggers are ignored — unless ``force=True``, which asks for one more run right
after the current one (any number of forced triggers during one run coalesce
into that one extra run). There is no ``poll_delay`` pause after a run.
"""
from __future__ import annotations

from typing import Any, Optional

from gevent.event import Event

from ._engine import Engine
from ._run import Halt, Run
from .continuous import BackgroundAsyncWorker

__all__ = ["BackgroundEventWorker"]


class EventRun(Run):
    """A start of an event worker: whether a run is pending or in progress
    (``busy``), and whether a forced trigger asked for one more (``again``)."""

    __slots__ = ("busy", "again")

    def __init__(self, supervisor: Any) -> None:
        super().__init__(supervisor)
        self.busy = False
        self.again = False


class BackgroundEventWorker(BackgroundAsyncWorker):
    """Calls its executor once per accepted trigger (see the module docstring).

    A :class:`BackgroundAsyncWorker`, as in atasker (which ran every
    event-driven worker on an event loop); it waits for triggers, not
    ``poll_delay``."""

    holds_slot = True
    kind = "event"
    _run: Optional[EventRun]  # type: ignore[assignment]  # (made by _new_run)

    def __init__(self, *args: Any, e: Any = None, event: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event = Event()

    def _new_run(self) -> EventRun:
        return EventRun(self.supervisor)

    def get_event_obj(self) -> Event:
        """The gevent ``Event`` the worker waits on."""
        return self._event

    def trigger_threadsafe(self, force: bool = False) -> None:
        """Trigger a run, from any greenlet or any OS thread (see ``force`` above)."""
        self.supervisor.call_soon_threadsafe(self._trigger, force)

    async def trigger(self, force: bool = False) -> None:
        """Trigger a run from a coroutine running on an aloop."""
        self._trigger(force)

    def _trigger(self, force: bool = False) -> None:
        # May run in a hub callback: only sets flags and the event.
        run = self._run
        if run is None or not run.active:
            return
        if run.busy:
            if force:
                run.again = True
            return
        run.busy = True
        self._event.set()

    def _loop(self, run: EventRun, engine: Engine) -> None:  # type: ignore[override]
        event = self._event
        call = engine.call
        try:
            while run.active:
                if not run.again:
                    run.park(event.wait)
                run.again = False
                event.clear()
                if not run.active:
                    break
                run.busy = True
                if call() is False or not run.active:
                    break
                run.busy = run.again
        except Halt:
            pass
        finally:
            run.busy = run.again = False
            run.end(self._finished)
