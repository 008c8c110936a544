"""The wire format between the pool and its children: frames, call payloads
(with the cache of plain functions' pickles) and exceptions in transit."""
from __future__ import annotations

import pickle
import signal
import struct
import traceback
import types
from typing import Any, Dict, Iterator, Optional, Tuple

from .errors import RemoteError, RemoteTraceback, TaskPickleError

# -- wire format -------------------------------------------------------------
# Every frame: 4-byte length, 1-byte kind, then ``length`` bytes of payload.
HEADER = struct.Struct("!IB")
_HSIZE = HEADER.size
# parent -> child
K_CALL = 0  # payload: 4-byte length n, pickle of fn (n bytes), pickle of (args, kwargs, task id or None)
K_STOP = 1  # no payload: finish and exit
K_CALL_SPIN = 2  # as K_CALL; then, if no call is waiting, poll for one for up to `spin`
# child -> parent: the answer to the oldest call not answered yet...
K_OK = 0  # payload: pickle of the return value
K_ERR = 1  # payload: pickle of (exception, traceback text)
K_ERR_EXIT = 3  # as K_ERR, and the child exits (SystemExit & co. in the call)
# ... or, from K_CONTROL on, news of the child itself (no call answered)
K_CONTROL = 4
K_INIT_FAILED = 4  # payload: the initializer's traceback, utf-8; the child exits
K_READY = 5  # no payload: the initializer (if any) is done; calls run from now on

STOP_FRAME = HEADER.pack(0, K_STOP)
POLLIN = 1  # select.POLLIN (select.poll itself is gone after monkey-patching)
PROTOCOL = pickle.HIGHEST_PROTOCOL
RECV_SIZE = 256 * 1024

dumps = pickle.dumps
loads = pickle.loads

# A call's function travels as its own pickle (a call frame: _FN_LEN, the
# function, then args, kwargs and a task id). A plain function pickles by
# reference (module and qualified name), and finding it by name is a third of
# the cost of pickling a tiny call; the bytes never change, so they are kept
# here, for up to
# _FN_CACHE_SIZE functions (then the cache starts over). Only plain functions:
# anything else (a bound method, a partial, a callable object) may pickle its
# state, which can change.
_FN_LEN = struct.Struct("!I")
_FN_CACHE_SIZE = 512
_fn_pickles: Dict[Any, bytes] = {}


def call_payload(fn: Any, args: Any, kwargs: Optional[dict], task_id: Any = None) -> bytes:
    """The payload of a call frame (see _FN_LEN); raises if it does not pickle."""
    plain = type(fn) is types.FunctionType
    fn_pickle = _fn_pickles.get(fn) if plain else None
    if fn_pickle is None:
        fn_pickle = dumps(fn, PROTOCOL)
        if plain:
            if len(_fn_pickles) >= _FN_CACHE_SIZE:
                _fn_pickles.clear()
            _fn_pickles[fn] = fn_pickle
    return _FN_LEN.pack(len(fn_pickle)) + fn_pickle + dumps((args, kwargs or {}, task_id), PROTOCOL)


def load_call(payload: Any) -> Tuple[Any, Any, Any]:  # pragma: no cover - child only
    """``(fn, args, kwargs)`` out of a call frame's payload."""
    (size,) = _FN_LEN.unpack_from(payload)
    end = _FN_LEN.size + size
    fn = loads(payload[_FN_LEN.size:end])
    args, kwargs, task_id = loads(payload[end:])
    if task_id is not None:
        kwargs["_task_id"] = task_id  # (a dict of the child's own, just unpickled)
    return fn, args, kwargs


def _frames(data: Any) -> Any:
    """Split ``data`` into ``(kind, payload, None)`` frames; an incomplete tail
    comes last as ``(None, None, bytearray)``."""
    pos = 0
    n = len(data)
    while n - pos >= _HSIZE:
        size, kind = HEADER.unpack_from(data, pos)
        end = pos + _HSIZE + size
        if end > n:
            break
        yield kind, data[pos + _HSIZE:end], None
        pos = end
    if pos < n:
        rest = data if pos == 0 and isinstance(data, bytearray) else bytearray(data[pos:])
        yield None, None, rest


class FrameReader:
    """Frames out of a stream of socket reads, for both ends of a pipe:
    ``feed(data)`` yields each complete ``(kind, payload)``; an incomplete tail
    is kept in ``partial`` and completed by the next read."""

    __slots__ = ("partial",)

    def __init__(self) -> None:
        self.partial: Optional[bytearray] = None

    def feed(self, data: Any) -> Iterator[Tuple[int, Any]]:
        partial = self.partial
        if partial is not None:
            partial += data
            data, self.partial = partial, None
        for kind, payload, rest in _frames(data):
            if payload is None:
                self.partial = rest
            else:
                yield kind, payload


def load_exception(payload: bytes) -> BaseException:
    try:
        exc, tb = loads(payload)
    except Exception as err:  # pragma: no cover - the child checked it loads
        return RemoteError("the child's exception could not be unpickled: %s: %s" % (type(err).__name__, err))
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def exc_name(exc: BaseException) -> str:
    return "%s(%s)" % (type(exc).__name__, ", ".join(map(repr, exc.args)))


def dump_exception(exc: BaseException, fn: Any, tb: Optional[str] = None) -> bytes:  # pragma: no cover
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    try:
        data = dumps((exc, tb), PROTOCOL)
        loads(data)  # an exception that pickles may still not unpickle
        return data
    except Exception as err:
        substitute = RemoteError(
            "%s raised %s.%s: %s (it could not be sent back as itself: %s: %s)"
            % (describe(fn), type(exc).__module__, type(exc).__qualname__, exc, type(err).__name__, err)
        )
        return dumps((substitute, tb), PROTOCOL)


# -- messages ------------------------------------------------------------------
def describe(fn: Any) -> str:
    """``module.qualname`` of a function, for messages."""
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    return "%s.%s" % (module, name) if module else name


def describe_status(exitcode: Optional[int]) -> str:
    """A child's exit status in words."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return "killed by %s" % signal.Signals(-exitcode).name
        except ValueError:
            return "killed by signal %d" % -exitcode
    return "exit code %d" % exitcode


#: What to do about a function that pickling by reference cannot find again.
NOT_BY_REFERENCE = ("functions travel to the child processes by reference (module and name): a lambda"
                    " or a function defined inside another cannot; define it at the top level of a module")


def send_error(fn: Any, exc: BaseException) -> TaskPickleError:
    """The :class:`TaskPickleError` of a call of ``fn`` that did not pickle
    (``exc``); for a lambda or a nested function, it says what to do."""
    message = "could not send %s to a child process" % describe(fn)
    qualname = getattr(fn, "__qualname__", "")
    hint = NOT_BY_REFERENCE if isinstance(qualname, str) and "<" in qualname else None
    err = pickle_error(message, exc, hint)
    err.unsent = True
    return err


def pickle_error(message: str, exc: BaseException, hint: Optional[str] = None) -> TaskPickleError:
    """A :class:`TaskPickleError` for ``exc``, raised while pickling or unpickling."""
    text = "%s: %s: %s" % (message, type(exc).__name__, exc)
    err = TaskPickleError(text if hint is None else "%s: %s" % (text, hint))
    err.__cause__ = exc
    return err
