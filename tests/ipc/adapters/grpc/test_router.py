"""The hub's routing table, with fake peers (no sockets)."""

from __future__ import annotations

import asyncio

from jeeves_control_tower.ipc.adapters.grpc import commbus_pb2 as pb
from jeeves_control_tower.ipc.adapters.grpc.router import Answer, Router


class FakePeer:
    def __init__(self, process_id: str, accept: bool = True) -> None:
        self.process_id = process_id
        self.accept = accept
        self.got: list[pb.Delivery] = []
        self.cancelled: list[int] = []

    def cancel(self, rid: int) -> None:
        self.cancelled.append(rid)

    def deliver(self, delivery: pb.Delivery) -> bool:
        if self.accept:
            self.got.append(delivery)
        return self.accept


def answers() -> tuple[list[tuple[int, bytes, str]], Answer]:
    seen: list[tuple[int, bytes, str]] = []

    def answer(status: pb.Status, data: bytes, text: str) -> None:
        seen.append((status, data, text))

    return seen, answer


async def test_publish_reaches_every_consumer_and_send_one_in_turn() -> None:
    router = Router()
    a, b = FakePeer("a"), FakePeer("b")
    for peer in (a, b):
        router.subscribe(peer, "publish", "E")
        router.subscribe(peer, "send", "C")
    assert router.publish("E", b"e") == 2
    for _ in range(4):
        assert router.send("C", b"c")
    assert [d.pattern for d in a.got] == ["publish", "send", "send"]
    assert [d.pattern for d in b.got] == ["publish", "send", "send"]


async def test_commands_wait_bounded_and_move_on_when_their_peer_goes() -> None:
    router = Router(max_waiting=2)
    assert router.send("C", b"1") and router.send("C", b"2")
    assert not router.send("C", b"3")  # refused: the hub holds max_waiting already
    a, b = FakePeer("a"), FakePeer("b")
    redelivered: list[int] = []
    router = Router(on_redelivered=redelivered.append)
    router.send("C", b"1")
    router.subscribe(a, "send", "C")
    assert [d.data for d in a.got] == [b"1"]
    router.subscribe(b, "send", "C")
    router.remove_peer(a)  # unanswered: routed again
    assert [d.data for d in b.got] == [b"1"] and redelivered == [1]
    router.respond(b, pb.Response(id=b.got[0].id, status=pb.REQUEUE))
    assert len(b.got) == 2  # requeued, and b is the only consumer left


async def test_answers_only_from_the_peer_asked() -> None:
    stray: list[int] = []
    router = Router(on_stray=lambda: stray.append(1))
    a, b = FakePeer("a"), FakePeer("b")
    router.subscribe(a, "query", "Q")
    seen, answer = answers()
    router.query("Q", b"q", 5.0, answer)
    rid = a.got[0].id
    router.respond(b, pb.Response(id=rid, status=pb.OK, data=b"forged"))
    assert seen == [] and stray == [1]
    router.respond(a, pb.Response(id=rid, status=pb.OK, data=b"r"))
    router.respond(a, pb.Response(id=rid, status=pb.OK, data=b"again"))
    assert seen == [(pb.OK, b"r", "")] and stray == [1, 1]


async def test_a_query_ends_once_no_handler_gone_or_refused() -> None:
    router = Router(max_in_flight=1)
    seen, answer = answers()
    router.query("Q", b"q", 5.0, answer)
    assert seen[-1][0] == pb.NO_HANDLER
    a = FakePeer("a")
    router.subscribe(a, "query", "Q")
    router.query("Q", b"q", 5.0, answer)
    router.query("Q", b"q", 5.0, answer)
    assert seen[-1][0] == pb.REFUSED  # one in flight already
    router.remove_peer(a)
    assert seen[-1][0] == pb.UNAVAILABLE and "went away" in seen[-1][2]
    assert len(seen) == 3


async def test_a_query_times_out_once_and_a_peer_may_answer_during_delivery() -> None:
    router = Router()
    slow = FakePeer("slow")
    router.subscribe(slow, "query", "Q")
    seen, answer = answers()
    router.query("Q", b"q", 0.01, answer)
    await asyncio.sleep(0.05)
    assert [s[0] for s in seen] == [pb.TIMEOUT]
    router.respond(slow, pb.Response(id=slow.got[0].id, status=pb.OK, data=b"late"))
    assert len(seen) == 1  # a late answer is stray

    class AtOnce(FakePeer):  # answers inside deliver (as the hub's own bus does when busy)
        def deliver(self, delivery: pb.Delivery) -> bool:
            router.respond(self, pb.Response(id=delivery.id, status=pb.UNAVAILABLE))
            return True

    router.unsubscribe(slow, "query", "Q")
    router.subscribe(AtOnce("now"), "query", "Q")
    router.query("Q", b"q", 0.01, answer)
    await asyncio.sleep(0.05)  # past the timeout: still answered exactly once
    assert [s[0] for s in seen] == [pb.TIMEOUT, pb.UNAVAILABLE]


async def test_a_cancelled_query_is_forgotten_and_its_peer_told() -> None:
    strays: list[int] = []
    router = Router(on_stray=lambda: strays.append(1))
    a = FakePeer("a")
    router.add_peer(a)
    router.subscribe(a, "query", "Q")
    seen, answer = answers()
    rid = router.query("Q", b"{}", 300, answer)
    assert rid and router.in_flight == 1
    router.cancel(rid)
    assert router.in_flight == 0 and a.cancelled == [rid]
    router.respond(a, pb.Response(id=rid, status=pb.OK, data=b"late"))
    assert seen == [] and strays == [1]
    router.cancel(rid)  # twice, or after the answer: nothing to tell
    assert a.cancelled == [rid]


async def test_a_consumer_that_never_answers_holds_at_most_its_prefetch() -> None:
    router = Router(max_unacked=2, max_waiting=3)
    stuck = FakePeer("stuck")
    router.subscribe(stuck, "send", "C")
    sent = [router.send("C", str(i).encode()) for i in range(7)]
    assert sent == [True] * 5 + [False] * 2  # 2 in flight, 3 waiting, then refused
    assert len(stuck.got) == 2 and router.in_flight == 2 and router.waiting == 3
    router.respond(stuck, pb.Response(id=stuck.got[0].id, status=pb.OK))
    assert [d.data for d in stuck.got] == [b"0", b"1", b"2"]  # the oldest held moves on
    assert router.waiting == 2
    # another consumer takes what waits, in order, and round robin skips the full one
    other = FakePeer("other")
    router.subscribe(other, "send", "C")
    assert [d.data for d in other.got] == [b"3", b"4"] and router.waiting == 0
    assert router.send("C", b"5")
    assert [d.data for d in other.got] == [b"3", b"4"] and router.waiting == 1  # both full
    router.remove_peer(stuck)  # its two unanswered commands go back behind "5"
    assert router.waiting == 3 and [d.data for d in other.got] == [b"3", b"4"]
    for d in list(other.got):
        router.respond(other, pb.Response(id=d.id, status=pb.OK))
    assert [d.data for d in other.got][2:] == [b"5", b"1"]


async def test_the_command_frames_held_are_bounded_in_bytes() -> None:
    router = Router(max_command_bytes=10)
    a = FakePeer("a")
    router.subscribe(a, "send", "C")
    assert router.send("C", b"x" * 6)
    assert not router.send("C", b"y" * 5)  # 11 bytes would be held: refused, not kept
    assert router.send("W", b"z" * 4)  # waiting frames count too (nobody consumes W)
    assert router.command_bytes == 10 and not router.send("W", b"!")
    router.respond(a, pb.Response(id=a.got[0].id, status=pb.REQUEUE))
    assert router.command_bytes == 10  # routed again: still held
    router.respond(a, pb.Response(id=a.got[1].id, status=pb.OK))
    assert router.command_bytes == 4 and router.send("C", b"y" * 5)


async def test_commands_wait_rather_than_pass_max_in_flight() -> None:
    router = Router(max_in_flight=1)
    a = FakePeer("a")
    router.subscribe(a, "send", "C")
    assert router.send("C", b"1") and router.send("C", b"2")
    assert router.in_flight == 1 and router.waiting == 1
    router.respond(a, pb.Response(id=a.got[0].id, status=pb.OK))
    assert [d.data for d in a.got] == [b"1", b"2"] and router.waiting == 0


async def test_held_commands_move_on_when_an_in_flight_slot_ends_any_way() -> None:
    for end in ("answered", "timed out", "forgotten", "peer gone"):
        router = Router(max_in_flight=1)
        asker, consumer = FakePeer("asker"), FakePeer("consumer")
        router.subscribe(asker, "query", "Q")
        router.subscribe(consumer, "send", "C")
        _, answer = answers()
        rid = router.query("Q", b"q", 0.01 if end == "timed out" else 5.0, answer)
        assert router.send("C", b"c") and router.waiting == 1  # the one slot is the query's
        if end == "answered":
            router.respond(asker, pb.Response(id=rid, status=pb.OK))
        elif end == "timed out":
            await asyncio.sleep(0.05)
        elif end == "forgotten":
            router.forget(rid)
        else:
            router.remove_peer(asker)
        assert [d.data for d in consumer.got] == [b"c"] and router.waiting == 0, end


async def test_a_clients_prefetch_counts_every_type_it_consumes() -> None:
    router = Router(max_unacked=2)
    greedy, other = FakePeer("greedy"), FakePeer("other")
    for t in ("A", "B", "C"):
        router.subscribe(greedy, "send", t)
    for t in ("A", "B", "C"):
        assert router.send(t, t.encode())
    assert len(greedy.got) == 2 and router.waiting == 1  # C waits: greedy holds two
    router.subscribe(other, "send", "C")
    assert [d.data for d in other.got] == [b"C"]
    router.respond(greedy, pb.Response(id=greedy.got[0].id, status=pb.OK))
    assert router.send("B", b"B2") and [d.data for d in greedy.got][2:] == [b"B2"]


async def test_random_traffic_ends_every_command_once_and_holds_nothing_after() -> None:
    # Consumers that answer later, at once (inside deliver), refuse deliveries or vanish
    # inside deliver; subscriptions, sends, answers (OK, REJECT, REQUEUE) and departures at
    # random. Then one well-behaved consumer drains: every accepted command has ended
    # exactly once, no consumer ever held more than its prefetch, and nothing is held.
    import random

    class Peer(FakePeer):
        def __init__(self, name: str, mode: str, rng: random.Random) -> None:
            super().__init__(name)
            self.mode, self.rng, self.gone, self.busy = mode, rng, False, False
            self.pending: list[pb.Delivery] = []
            self.live: set[int] = set()  # handed to it and still its own to answer

        def deliver(self, delivery: pb.Delivery) -> bool:
            if self.gone:
                return False
            if self.mode == "vanishes" and self.rng.random() < 0.3:
                leave(self)
                return False
            if self.mode == "refuses" and self.rng.random() < 0.3:
                return False
            self.live.add(delivery.id)
            if self.mode == "at once" and not self.busy and self.rng.random() < 0.5:
                self.busy = True
                finish(self, delivery, self.rng.choice([pb.OK, pb.REJECT, pb.REQUEUE]))
                self.busy = False
                return True
            self.pending.append(delivery)
            assert len(self.pending) <= router.max_unacked
            return True

    ended: list[bytes] = []

    def finish(peer: Peer, delivery: pb.Delivery, status: pb.Status) -> None:
        its_own = delivery.id in peer.live
        peer.live.discard(delivery.id)
        router.respond(peer, pb.Response(id=delivery.id, status=status))
        if its_own and status != pb.REQUEUE:
            ended.append(delivery.data)

    def leave(peer: Peer) -> None:
        peer.gone = True
        peer.live.clear()  # what it held is routed again
        router.remove_peer(peer)

    for seed in range(200):
        rng = random.Random(seed)
        ended.clear()
        router = Router(
            max_unacked=rng.randint(1, 3),
            max_waiting=rng.randint(1, 20),
            max_in_flight=rng.randint(2, 30),
            max_command_bytes=rng.randint(20, 400),
        )
        peers: list[Peer] = []
        accepted: list[bytes] = []
        for step in range(300):
            op, kind = rng.random(), rng.choice("AB")
            if op < 0.12:
                mode = rng.choice(["later", "later", "at once", "vanishes", "refuses"])
                peers.append(Peer(f"p{len(peers)}", mode, rng))
                router.add_peer(peers[-1])
            elif op < 0.25 and peers:
                peer = rng.choice(peers)
                if not peer.gone:
                    router.subscribe(peer, "send", kind)
            elif op < 0.55:
                data = f"{seed}.{step}".encode() * rng.randint(1, 5)
                if router.send(kind, data):
                    accepted.append(data)
            elif op < 0.85:
                busy = [p for p in peers if p.pending and not p.gone]
                if busy:
                    peer = rng.choice(busy)
                    delivery = peer.pending.pop(rng.randrange(len(peer.pending)))
                    finish(peer, delivery, rng.choice([pb.OK, pb.OK, pb.REJECT, pb.REQUEUE]))
            elif op < 0.9 and peers:
                peer = rng.choice(peers)
                if not peer.gone:
                    leave(peer)
            elif peers:
                router.unsubscribe(rng.choice(peers), "send", kind)
        for peer in peers:
            if not peer.gone:
                leave(peer)
        drain = Peer("drain", "later", rng)
        for kind in "AB":
            router.subscribe(drain, "send", kind)
        while drain.pending:
            finish(drain, drain.pending.pop(0), pb.OK)
        assert sorted(ended) == sorted(accepted), seed
        assert (router.waiting, router.in_flight, router.command_bytes) == (0, 0, 0), seed
