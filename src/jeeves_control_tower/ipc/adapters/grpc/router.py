"""The hub's routing table: who consumes what, and where each message goes.

A *peer* is one process joined to the hub: a client's Connect stream (:class:`~.session.Session`)
or the hub's own bus (:class:`~.local.HubBus`). The router never reads a frame; it moves
bytes between peers by ``(pattern, type)``:

- **publish**: to every peer consuming ``("publish", type)`` now (the sender included, if
  it consumes the type: its bus delivers to its own subscribers that way), in order per
  sender; at-most-once.
- **send**: to exactly one peer consuming ``("send", type)`` (round robin over those with
  room: a peer holds at most ``max_unacked`` unanswered commands, all types together, its
  prefetch). With none that has room, or with ``max_in_flight`` reached, the command waits
  in the hub, in order per type, and moves on as soon as room is made (a consumer
  subscribes or answers, an in-flight entry ends). A command stays *in flight* until its
  peer answers (``OK``, ``REJECT``: done; ``REQUEUE``: routed again); when the peer goes
  away first it is routed again (counted as a redelivery). ``send`` is refused when the
  command would wait and ``max_waiting`` commands wait already, or when the command
  frames the hub holds (waiting and in flight) would pass ``max_command_bytes``: a
  consumer that never answers, or a type nobody consumes, cannot grow the hub's memory
  without bound, nor take more than ``max_unacked`` in-flight slots. Commands live in
  the hub's memory: a hub restart loses those not yet answered.
- **query** and **dispatch**: to one peer (round robin over the query's consumers; the
  dispatch's serving peer), answered through a callback exactly once: the peer's answer,
  ``NO_HANDLER`` (nobody consumes it), ``TIMEOUT`` (no answer in time) or ``UNAVAILABLE``
  (the peer went away first).

A peer may answer only what was delivered to it: an answer naming another peer's
delivery, or none, is ignored (and reported to ``on_stray``). At most ``max_in_flight``
queries, dispatches and commands wait for their answers (beyond that a query is refused
and a command waits);
a query's or dispatch's frame is not kept once delivered (only a command's is, to route
it again). A caller that gives up calls :meth:`cancel`: the entry goes at once and the
peer is told to stop (its late answer is then stray). Event-loop-thread only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import commbus_pb2 as pb

__all__ = ["Answer", "Peer", "Router"]

#: ``answer(status, data, message)``: how a routed query or dispatch ended.
Answer = Callable[[pb.Status, bytes, str], None]


class Peer(Protocol):
    """A process joined to the hub."""

    process_id: str

    def deliver(self, delivery: pb.Delivery) -> bool:
        """Hand ``delivery`` to the process without waiting; ``False`` if it cannot take
        it (gone, or too far behind: the peer then removes itself)."""
        ...

    def cancel(self, rid: int) -> None:
        """Nobody waits for the answer to delivery ``rid`` any more: stop working on it
        (no answer is needed; one that comes is ignored)."""
        ...


@dataclass(slots=True)
class _InFlight:
    peer: Peer
    pattern: str
    type: str
    data: bytes
    answer: Answer | None  # None: a command
    timer: asyncio.TimerHandle | None


class Router:
    """See the module docstring. ``on_redelivered(n)`` counts commands routed again after
    their peer went away; ``on_stray()`` an answer that matched nothing of its peer's."""

    def __init__(
        self,
        *,
        max_waiting: int = 10_000,
        max_in_flight: int = 100_000,
        max_unacked: int = 100,
        max_command_bytes: int = 256 << 20,
        on_redelivered: Callable[[int], None] = lambda n: None,
        on_stray: Callable[[], None] = lambda: None,
    ) -> None:
        self.max_waiting = max_waiting
        self.max_in_flight = max_in_flight
        if max_waiting < 0 or max_in_flight < 1 or max_unacked < 1 or max_command_bytes < 1:
            raise ValueError(
                "max_waiting >= 0, max_in_flight, max_unacked and max_command_bytes >= 1"
            )
        self.max_unacked = max_unacked
        self.max_command_bytes = max_command_bytes
        self._on_redelivered = on_redelivered
        self._on_stray = on_stray
        self._routes: dict[tuple[str, str], list[Peer]] = {}
        self._turn: dict[tuple[str, str], int] = {}
        self._interests: dict[Peer, set[tuple[str, str]]] = {}
        self._waiting: dict[str, deque[bytes]] = {}
        self._waiting_count = 0
        self._in_flight: dict[int, _InFlight] = {}
        self._unacked: dict[Peer, int] = {}  # peer -> commands handed to it, unanswered
        self._capped = False  # a command waits because max_in_flight was reached
        self._command_bytes = 0  # frames of the commands held: waiting or in flight
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ peers

    @property
    def peers(self) -> list[Peer]:
        return list(self._interests)

    def add_peer(self, peer: Peer) -> None:
        self._interests.setdefault(peer, set())

    def remove_peer(self, peer: Peer) -> None:
        """Forget ``peer``: its routes go, its commands in flight are routed again, its
        queries and dispatches in flight end ``UNAVAILABLE``."""
        for key in self._interests.pop(peer, set()):
            self._drop_route(peer, key)
        redelivered = 0
        for rid, item in list(self._in_flight.items()):
            if item.peer is not peer:
                continue
            del self._in_flight[rid]
            if item.timer is not None:
                item.timer.cancel()
            if item.answer is None:
                redelivered += 1
                self._release_slot(peer)
                self._route_command(item.type, item.data)
            else:
                item.answer(pb.UNAVAILABLE, b"", f"process {peer.process_id} went away")
        if redelivered:
            self._on_redelivered(redelivered)
        self._in_flight_ended()

    def subscribe(self, peer: Peer, pattern: str, message_type: str) -> None:
        key = (pattern, message_type)
        interests = self._interests.setdefault(peer, set())
        if key in interests:
            return
        interests.add(key)
        self._routes.setdefault(key, []).append(peer)
        if pattern == "send":
            self._release_waiting(message_type)

    def unsubscribe(self, peer: Peer, pattern: str, message_type: str) -> None:
        key = (pattern, message_type)
        interests = self._interests.get(peer)
        if interests is not None and key in interests:
            interests.discard(key)
            self._drop_route(peer, key)

    def interests(self, peer: Peer) -> int:
        return len(self._interests.get(peer, ()))

    def consumers(self, pattern: str, message_type: str) -> int:
        return len(self._routes.get((pattern, message_type), ()))

    def _drop_route(self, peer: Peer, key: tuple[str, str]) -> None:
        peers = self._routes.get(key)
        if peers is None:
            return
        peers[:] = [p for p in peers if p is not peer]
        if not peers:
            del self._routes[key]
            self._turn.pop(key, None)

    def _next(self, key: tuple[str, str]) -> Peer | None:
        peers = self._routes.get(key)
        if not peers:
            return None
        turn = self._turn.get(key, 0) % len(peers)
        self._turn[key] = turn + 1
        return peers[turn]

    # ------------------------------------------------------------------ routing

    def publish(self, message_type: str, data: bytes) -> int:
        """Deliver an event frame to every consumer of its type; how many took it."""
        peers = self._routes.get(("publish", message_type))
        if not peers:
            return 0
        delivery = pb.Delivery(pattern="publish", type=message_type, data=data)
        taken = 0
        for peer in list(peers):
            if peer.deliver(delivery):
                taken += 1
        return taken

    def send(self, message_type: str, data: bytes) -> bool:
        """Route a command to one consumer with room, or hold it; ``False`` (refused, nothing
        kept) when it would be held and ``max_waiting`` commands wait already, or when the
        command frames held would pass ``max_command_bytes``."""
        if self._command_bytes + len(data) > self.max_command_bytes:
            return False
        if message_type in self._waiting:  # those held first: in order
            self._release_waiting(message_type)
        if message_type in self._waiting or not self._deliver_command(message_type, data):
            if self._waiting_count >= self.max_waiting:
                return False
            self._hold(message_type, data)
        self._command_bytes += len(data)
        return True

    def _route_command(self, message_type: str, data: bytes) -> None:
        """Deliver or hold a command the hub has accepted already (never refused)."""
        if message_type in self._waiting or not self._deliver_command(message_type, data):
            self._hold(message_type, data)

    def _deliver_command(self, message_type: str, data: bytes) -> bool:
        """Hand a command to the next consumer with room; ``False`` when none took it."""
        key = ("send", message_type)
        for _ in range(len(self._routes.get(key, ()))):
            if len(self._in_flight) >= self.max_in_flight:
                self._capped = True
                return False
            peer = self._next(key)
            if peer is None:
                break
            taken = self._unacked.get(peer, 0)
            if taken >= self.max_unacked:
                continue
            rid = next(self._ids)
            self._in_flight[rid] = _InFlight(peer, "send", message_type, data, None, None)
            self._unacked[peer] = taken + 1
            if peer.deliver(pb.Delivery(id=rid, pattern="send", type=message_type, data=data)):
                return True
            if self._in_flight.pop(rid, None) is None:
                return True  # the peer went away inside deliver: routed again already
            self._release_slot(peer)
        return False

    def _release_slot(self, peer: Peer) -> None:
        left = self._unacked.get(peer, 0) - 1
        if left > 0:
            self._unacked[peer] = left
        else:
            self._unacked.pop(peer, None)

    def _in_flight_ended(self) -> None:
        """An in-flight entry ended: if commands wait for want of an in-flight slot, they
        move on (every held type in turn, until the limit is reached again)."""
        if self._capped and len(self._in_flight) < self.max_in_flight:
            self._capped = False
            self._release_held(lambda message_type: True)

    def _release_held(self, wanted: Callable[[str], bool]) -> None:
        for message_type in list(self._waiting):
            if self._capped:
                return
            if wanted(message_type):
                self._release_waiting(message_type)

    def _hold(self, message_type: str, data: bytes) -> None:
        self._waiting.setdefault(message_type, deque()).append(data)
        self._waiting_count += 1

    def _release_waiting(self, message_type: str) -> None:
        """Deliver the held commands of ``message_type``, in order, while a consumer has
        room. (A delivery may be answered inside ``deliver``, which comes back here.)"""
        while True:
            held = self._waiting.get(message_type)
            if not held:
                self._waiting.pop(message_type, None)
                return
            data = held.popleft()
            self._waiting_count -= 1
            if not self._deliver_command(message_type, data):
                self._waiting.setdefault(message_type, deque()).appendleft(data)
                self._waiting_count += 1
                return

    @property
    def in_flight(self) -> int:
        """Queries, dispatch attempts and commands waiting for their answers."""
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        """Commands held for want of a consumer with room."""
        return self._waiting_count

    @property
    def command_bytes(self) -> int:
        """Bytes of the command frames the hub holds (waiting or in flight)."""
        return self._command_bytes

    def query(self, message_type: str, data: bytes, timeout: float, answer: Answer) -> int:
        """Ask one consumer of ``("query", type)``; ``answer`` is called exactly once
        (``REFUSED`` at once while ``max_in_flight`` queries, dispatches and commands are
        unanswered: a flood cannot grow the hub's memory without bound), unless
        :meth:`forget` is called with the request id returned (0: answered already)."""
        if len(self._in_flight) >= self.max_in_flight:
            answer(pb.REFUSED, b"", f"the hub has {self.max_in_flight} requests in flight")
            return 0
        key = ("query", message_type)
        for _ in range(len(self._routes.get(key, ()))):
            peer = self._next(key)
            if peer is not None:
                rid = self.request(peer, "query", message_type, data, timeout, answer)
                if rid:
                    return rid
        answer(pb.NO_HANDLER, b"", f"no process handles query type {message_type[:200]!r}")
        return 0

    def request(
        self,
        peer: Peer,
        pattern: str,
        message_type: str,
        data: bytes,
        timeout: float,
        answer: Answer,
    ) -> int:
        """Deliver a query or dispatch to ``peer``; its request id (``answer`` is then
        called exactly once, unless :meth:`forget` is), or 0 when the peer could not take
        it (nothing was sent)."""
        rid = next(self._ids)
        # The frame is not kept: a query or dispatch is answered, never routed again.
        item = _InFlight(peer, pattern, message_type, b"", answer, None)
        self._in_flight[rid] = item
        delivery = pb.Delivery(
            id=rid, pattern=pattern, type=message_type, data=data, deadline=time.time() + timeout
        )
        if not peer.deliver(delivery):
            self._in_flight.pop(rid, None)
            return 0
        # The timer is armed once the delivery is on its way (its write started: the
        # round trip's critical path), unless the peer answered it already.
        if self._in_flight.get(rid) is item:
            item.timer = asyncio.get_running_loop().call_later(timeout, self._expired, rid)
        return rid

    def forget(self, rid: int) -> None:
        """Drop request ``rid`` unanswered (its caller gave up); a late answer is stray."""
        item = self._in_flight.pop(rid, None)
        if item is not None:
            if item.timer is not None:
                item.timer.cancel()
            self._in_flight_ended()

    def cancel(self, rid: int) -> None:
        """:meth:`forget` request ``rid`` and tell its peer to stop working on it."""
        item = self._in_flight.get(rid)
        self.forget(rid)
        if item is not None:
            item.peer.cancel(rid)

    def _expired(self, rid: int) -> None:
        item = self._in_flight.pop(rid, None)
        if item is not None and item.answer is not None:
            item.answer(pb.TIMEOUT, b"", f"{item.pattern} {item.type[:200]!r} timed out")
        if item is not None:
            self._in_flight_ended()

    def respond(self, peer: Peer, response: pb.Response) -> None:
        """A peer's answer to one of its deliveries."""
        item = self._in_flight.get(response.id)
        if item is None or item.peer is not peer:
            self._on_stray()
            return
        del self._in_flight[response.id]
        if item.answer is not None:
            item.answer(response.status, response.data, response.message)
            self._in_flight_ended()
        else:
            was_full = self._unacked.get(peer, 0) >= self.max_unacked
            self._release_slot(peer)
            if response.status == pb.REQUEUE:
                self._route_command(item.type, item.data)
            else:
                self._command_bytes -= len(item.data)
            self._in_flight_ended()
            self._release_waiting(item.type)
            if was_full:  # what waited for this peer's room, of any type it consumes
                interests = self._interests.get(peer, set())
                self._release_held(lambda message_type: ("send", message_type) in interests)
        if item.timer is not None:  # after the answer is on its way
            item.timer.cancel()
