"""A signal that must not be lost: SIGINT / SIGTERM raise in the main thread, and are raised again.

Python runs a signal handler at the next bytecode of the main thread, wherever that is. When it is
inside a ``__del__``, a weakref callback or a generator being closed by the garbage collector, the
exception it raises is printed as "Exception ignored in ..." and dropped, and the command carries on
as if it had never been interrupted (a `vpcli predict --horizon 1000000` went on for two minutes
after Ctrl-C under a loaded CPU). So the handlers also record the signal here, and the progress
display -- which every long command advances -- raises it again at its next update
(:func:`raise_pending`) until it has been seen propagating (:func:`clear`).
"""
from __future__ import annotations

_pending: type[BaseException] | None = None


def note(exc_type: type[BaseException]) -> None:
    """Record that ``exc_type`` (KeyboardInterrupt, Terminated) was raised for a signal."""
    global _pending
    _pending = exc_type


def clear() -> None:
    """The interruption reached the command's top level: nothing is pending any more."""
    global _pending
    _pending = None


def raise_pending() -> None:
    """Raise the recorded interruption again (if an earlier raise was swallowed); else nothing."""
    if _pending is not None:
        raise _pending()
