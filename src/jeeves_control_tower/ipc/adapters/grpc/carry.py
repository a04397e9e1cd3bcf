"""Carry on a suspended write from its future's callbacks, without a task.

A stream write that :func:`~...bus.eager.start` began in the caller and that had to wait
(gRPC completes every write through the event loop) used to go on in a task of its own:
creating, scheduling and finishing that task cost more than the rest of the write, four
times per query through the hub. :class:`Carry` resumes the coroutine from the done
callback of the future it waits on, exactly as a task's step would (it sends ``None``;
the coroutine's ``await`` then takes the future's result or exception), so a write costs
one callback instead of a task. The coroutine must only wait on asyncio futures (as
grpc.aio's writes do) or yield bare (``asyncio.sleep(0)``); it runs with no current task,
so it must not use ``asyncio.timeout``. :meth:`cancel` cancels the future it waits on, as
``Task.cancel`` does: the coroutine sees ``CancelledError`` there. ``done(exc)`` is called
once at the end (``None``: it returned). Event-loop-thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ...bus.eager import Resume

__all__ = ["Carry"]


class Carry:
    """Drives ``rest`` (a :class:`Resume`) to its end; ``done(exc)`` once it has."""

    __slots__ = ("_coro", "_done", "_waiting", "finished")

    def __init__(self, rest: Resume, done: Callable[[BaseException | None], None]) -> None:
        self._coro = rest.coro
        self._done = done
        self._waiting: Any = None
        self.finished = False
        self._wait(rest.pending)

    def _wait(self, pending: Any) -> None:
        if pending is None:  # a bare yield: go on at the next loop iteration
            asyncio.get_running_loop().call_soon(self._step, None)
            return
        if getattr(pending, "_asyncio_future_blocking", None) is None:
            self._throw(RuntimeError(f"Carry cannot wait on {pending!r}"))
            return
        pending._asyncio_future_blocking = False
        self._waiting = pending
        pending.add_done_callback(self._step)

    def _step(self, _: Any) -> None:
        self._waiting = None
        try:
            pending = self._coro.send(None)
        except StopIteration:
            self._end(None)
        except (KeyboardInterrupt, SystemExit) as exc:
            self._end(exc)
            raise
        except BaseException as exc:
            self._end(exc)
        else:
            self._wait(pending)

    def _throw(self, error: BaseException) -> None:
        try:
            pending = self._coro.throw(error)
        except StopIteration:
            self._end(None)
        except BaseException as exc:
            self._end(exc)
        else:
            self._wait(pending)

    def _end(self, exc: BaseException | None) -> None:
        self.finished = True
        self._done(exc)

    def cancel(self) -> None:
        """Cancel the future the coroutine waits on (it then sees ``CancelledError``)."""
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.cancel()
