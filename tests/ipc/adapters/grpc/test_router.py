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
