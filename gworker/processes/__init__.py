"""A process pool that never blocks the gevent hub.

:class:`ProcessPool` takes the arguments of :class:`multiprocessing.Pool`
(``processes``, ``initializer``, ``initargs``, ``maxtasksperchild``, ``context``)
and runs calls in child processes. Stock ``multiprocessing.Pool`` cannot be used
under gevent: after ``patch_all()`` its helper threads become greenlets that block
on pipe reads and the whole process hangs. This pool talks to its children over
its own non-blocking sockets, and every wait goes through the hub.

How it works
------------

* **Start method: fork, done by gworker itself.** Each child is forked with
  :func:`gevent.os.fork_and_watch` (gevent's fork: ``gevent.reinit()`` in the child,
  a libev child watcher in the parent, so exits are seen cooperatively and children
  are reaped by the loop). Across the fork the thread's hub is swapped for an empty
  stand-in (:func:`gworker._gevent.fork_apart`): the at-fork hooks of other
  libraries run in the child before gevent reinitialises its loop, and one that
  waits through the hub there (OpenTelemetry's ``TracerProvider``) would otherwise
  run the parent's greenlets in the child, on the parent's sockets. In the child
  both the stand-in and the inherited hub are then thrown away — their loops
  destroyed, a fresh hub made — so none of the parent's greenlets, timers or
  servers ever run in the child; signal handlers are reset (SIGINT is ignored: the
  parent decides when its children stop) and the parent's other pool sockets are
  closed. Fork is fast (a few ms) and needs nothing to be importable at start-up;
  spawn would be safe but slow, and would re-import ``__main__`` in every child.
  The ``context`` argument is accepted for ``multiprocessing.Pool`` compatibility,
  but only a fork context (or ``None``/``"fork"``) is allowed.

  Forking a process that has other OS threads (gevent's monitor thread, its
  thread pool, native threads) copies only the calling thread: the child must
  not rely on locks those threads held. This is the same rule as for
  ``multiprocessing``'s fork start method.

* **Why not gipc** (the pure-gevent library that also forks children): its pipe
  writer takes a lock and may wait cooperatively, which must not happen in a hub
  callback (where a :class:`~gworker._admission.PriorityPool` starts admitted work);
  it starts children through ``multiprocessing.Process``, i.e. whatever the
  default start method is (``forkserver`` on Linux from Python 3.14); and
  importing it patches ``multiprocessing`` process-wide (``Popen.poll`` becomes a
  no-op), which breaks any stock ``multiprocessing.Pool`` elsewhere in the
  program. gworker borrows its child-side hub reset, not the library.

* **Functions must be importable.** The call ``(fn, args, kwargs)`` is pickled once
  in :meth:`ProcessPool.submit`; ``fn`` travels by reference (module and name), so it
  must be a module-level function the child can find. With fork the child has a
  copy of the parent as it was when the child started, so functions in
  ``__main__`` work — but a function defined (or a module imported) in the parent
  *after* the child started is unknown to it. Lambdas, nested functions and bound
  methods of unpicklable objects fail at ``submit`` with :class:`TaskPickleError`.
  A plain function's pickle (its name) is made once and kept; any other callable
  (a partial, a callable object) is pickled at each call, state and all.

* **Children start at construction**, one slot greenlet per child: each slot
  greenlet forks its child when it first runs (the next turn of the hub, never at
  import), serves it, and forks a replacement when the child dies or retires
  (``maxtasksperchild``: the child is told to exit together with its last call).
  Calls submitted before the children are up wait in the FIFO queue. A child
  also exits on its own when its socket reports EOF, i.e. when the parent is
  gone, so a parent that dies without shutting its pool down leaves nothing
  running once the children finish their current call.

* **One reader per child.** The slot greenlet waits on its child's socket through
  the hub (a libev io watcher) and wakes the moment a result arrives — no
  polling, no greenlet per call. A child runs its calls one at a time, in the
  order they were written to it. When a result arrives the child's next call is
  written *before* the result is settled, so the child keeps working while the
  parent unpickles and runs callbacks.

* **Writing ahead, only under a backlog.** A call goes to an idle child, else
  into the pool's FIFO queue. When the queue holds at least two calls per child,
  a child is given its fair share of it (``len(queue) // processes``, at most its
  *window*) in one write, so it finds its next call already in its socket and
  many results come back per wake-up (this more than doubles throughput for small
  calls). The window (``ProcessPool.window``) is about 4 ms of work by the
  measured time per call, a power of two from 1 to 64: tiny calls go 64 at a time
  (one wake-up of a sleeping child per 64 calls, not per 16), calls of 1 ms or
  more one at a time, so that nothing queued later waits behind seconds of calls
  written ahead. It starts at 16, and is timed from the reads of children that
  were busy all along (time since the last read over the results it brought, in
  decaying sums). Without a backlog nothing is written ahead, so a short call
  never waits behind a long one while another child is free. Calls written
  ahead to a child that dies had not started (a child runs them in order): they
  go back to the head of the queue; only the call that was running fails.

* **A child waiting for its next call.** When nothing else runs in a child (the
  calls left no greenlet or timer behind) it waits in ``poll()`` on its socket,
  not in a turn of its own hub: fewer system calls. Calls that keep coming one
  after another (each submitted once the last is done) cost a wake-up of a
  sleeping process each way, and on a virtual machine that is most of a round
  trip (a cross-CPU interrupt and the idle CPU's exit: ~50 µs each on a 2-core
  VM, against ~20 µs for the whole call otherwise). So a child that has just
  answered such a call keeps polling for the next one for up to ``spin``
  seconds (default 250 µs, ``spin=0`` turns it off), yielding the CPU to any
  other process that wants it (``sched_yield``) while it does. It polls only
  (a) after a call that found it idle while few enough other children were
  busy — at most one core fewer than the machine has, so one stays the
  parent's — and (b) while it pays: the child keeps on only while each call
  came within ``spin`` of its last result, so calls that come seldom never make
  it poll more than once. Cost: at most ``spin`` of CPU per call in a
  one-after-another sequence; none under a backlog (the children have calls
  written ahead) and none for seldom calls. One after another it more than
  halves the round trip on the 2-core VM the benchmarks run on.

* **Writes never wait.** ``submit`` writes the pickled call straight into an idle
  child's socket (non-blocking); what does not fit is finished by a write watcher.
  So ``submit`` may be called from a greenlet or from a hub callback alike.

* **Faults.** A child's exception is re-raised by :meth:`ProcessResult.get` with the
  child's traceback text attached as ``__cause__`` (a :class:`RemoteTraceback`); the
  child keeps serving. An exception that cannot travel back becomes a
  :class:`RemoteError`. A child that dies mid-call (``SIGKILL``, OOM, ``os._exit``)
  fails that call with :class:`ChildProcessDied` (pid, exit code or signal) as soon
  as its exit is seen — either the socket reports EOF or the child watcher fires,
  whichever comes first — and a replacement child is forked. An unpicklable
  argument fails the returned result at once, an unpicklable result fails that
  call only; both with :class:`TaskPickleError` (a ``TypeError`` and a
  ``pickle.PicklingError``). An initializer that raises fails the call that was
  sent to that child with :class:`ChildProcessDied` carrying the initializer's
  traceback; re-forking after such failures backs off (up to 5 s).

* **Time limits.** ``submit(fn, args, kwargs, timeout=seconds)`` (also
  ``apply_async``/``apply``) gives one call a time limit. A call still running
  at its limit fails with :class:`gworker.RunTimeout` (a ``gevent.Timeout``:
  ``seconds`` is the limit, ``what`` names the call); its child is killed
  (``SIGKILL``: a child process can be stopped at any point, unlike a
  greenlet), reaped, and replaced, so the pool keeps its size. The calls that
  were written after it to that child had not started (a child runs its calls
  in order): they go back to the head of the queue, in their order, and run
  in other children — only the call past its limit fails. ``timeouts`` counts
  the calls cut off.

  The limit counts from when the call starts in its child, not from
  ``submit``: time in the pool's queue, behind other calls in the child's
  window, in a new child's start and its ``initializer`` does not count. The
  parent knows a call has started without asking the child: the first call
  written to an idle child starts when it is written (a new child says when its
  initializer is done, and its first call starts then); a call written ahead
  starts when the child answers the call before it, i.e. when the parent reads
  that answer. So the limit may start late by a reply's transit (the child
  had started the call before the parent read the answer before it): tens of
  microseconds, more when the parent is busy. It never starts before the call
  could have: at the earliest when the call is written to an idle child, whose
  wake-up to read it (microseconds) then counts. The slot greenlet enforces
  the limit: a loop timer wakes it at the limit, it reads whatever the child
  sent, and only if the answer has not begun to arrive does it kill the child.
  So an answer the parent could read by then wins, and a call is never both
  answered and timed out. (An answer sent in the microseconds between that
  read and the kill is lost with the child; the call written behind it may
  then have just begun, and runs again from the start in another child.) A
  callback that waits in the slot greenlet (see *Callbacks*) delays that
  child's limits as it delays its results.

  The edges: a child that dies on its own before the limit fails its call
  with :class:`ChildProcessDied`, as without a limit. :meth:`ProcessPool.shutdown`
  lets running calls finish but keeps their limits, so a call past its limit
  does not hold it up (the calls written behind it then fail with
  :class:`PoolClosed`, as queued calls do at shutdown). After
  :meth:`ProcessPool.terminate` (or a shutdown's own ``timeout``) a running
  call fails with :class:`PoolClosed` as every running call does; a limit
  passing meanwhile changes nothing. A child retiring after its last call
  (``maxtasksperchild``) is cut off and replaced like any other. Cost: a call
  without a limit takes no timer and no clock reading; while no call in
  flight has a limit, each step of the pool checks one counter.

* **Threads.** Every gevent object here belongs to the hub of the OS thread that
  created the pool (it must be the main thread's hub: libev watches children
  only on the default loop). :meth:`ProcessPool.submit`, :meth:`ProcessPool.shutdown`,
  :meth:`ProcessPool.terminate` and :meth:`ProcessResult.get` called from another
  OS thread are handed to that hub with :func:`gworker._hubsafe.call_in_hub`; the
  calling thread waits, the hub never does.

* **Callbacks** given to :meth:`ProcessResult.rawlink` / ``add_done_callback`` are
  called with the result, in the hub's thread, in a greenlet — normally the reader
  (slot) greenlet that read the result, so no greenlet is made per call. A
  callback that waits therefore delays the next results of that one child, and a
  callback must not wait for another pool result: :meth:`ProcessResult.get` /
  ``wait`` called in a reader greenlet raise ``RuntimeError`` at once (they could
  be waiting for the very greenlet that has to read the answer) — spawn a greenlet
  for such work. A callback added to a result that is already done is called at
  once, or in a new greenlet when the caller is the hub itself. ``get()`` and
  ``wait()`` need a greenlet (not a raw hub callback).

* **Figures** for ``get_info``: ``processes`` (configured), ``size`` (children
  alive), ``busy`` (children with a call), ``pending`` (calls queued in the pool,
  not yet written to a child), ``pids``, ``timeouts`` (calls cut off by their
  time limit).
"""
from __future__ import annotations

from ._child import child_poll_counts
from .errors import (
    ChildProcessDied,
    PoolClosed,
    ProcessPoolError,
    RemoteError,
    RemoteTraceback,
    ResultTimeout,
    TaskPickleError,
)
from .pool import DEFAULT_SPIN, MAX_SPIN, ProcessPool
from .result import ProcessResult

__all__ = [
    "ProcessPool",
    "ProcessResult",
    "ProcessPoolError",
    "ChildProcessDied",
    "PoolClosed",
    "TaskPickleError",
    "RemoteError",
    "RemoteTraceback",
    "ResultTimeout",
    "child_poll_counts",
]
