"""MQTT version selection and what a CONNACK says: against a fake broker socket that
answers exactly what each test needs (a real 3.1.1-only broker is in test_brokers_311)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clawd.connection import Endpoint, Options
from clawd.errors import BrokerError, BrokerRefused
from clawd.transport import Transport
from tests.fake_broker import (
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    RECEIVE_MAXIMUM,
    RETAIN_AVAILABLE,
    FakeBroker,
    props,
)

SUBS = [("clawd/tasks/#", 1), ("clawd/_/control", 1), ("clawd/workers/+", 1)]


@pytest.fixture
def fakes() -> Iterator[list[FakeBroker]]:
    made: list[FakeBroker] = []
    yield made
    for f in made:
        f.close()


def fake(fakes: list[FakeBroker], **kw: object) -> FakeBroker:
    f = FakeBroker(**kw)  # type: ignore[arg-type]
    fakes.append(f)
    return f


def transport(url: str, protocol: str = "auto", driven: bool = False, **kw: object) -> Transport:
    return Transport(
        Endpoint.parse_all(url),
        Options(
            client_id="proto-test",
            protocol=protocol,
            subscriptions=list(SUBS),
            driven=driven,
            **kw,  # type: ignore[arg-type]
        ),
        lambda m: None,
    )


@pytest.mark.parametrize("refusal", ["v5-refusal", "v3-refusal", "close"])
@pytest.mark.parametrize("driven", [False, True], ids=["threaded", "driven"])
def test_auto_falls_back_to_311_when_the_broker_refuses_v5(fakes, refusal, driven) -> None:
    f = fake(fakes, v5=refusal)
    t = transport(f.url, driven=driven)
    t.start(timeout=20)
    try:
        assert t.protocol == "3.1.1"
        assert f.seen.connects == [5, 4]
        assert t.wait_subscribed(20)
        # one filter per SUBSCRIBE packet: some brokers never acknowledge several
        assert sorted(f.seen.subscribes) == sorted([[topic] for topic, _ in SUBS])
        d = t.publish_tracked("clawd/tasks/normal", b"{}")
        if driven:
            assert t._wait(t.connected, 1) and _poll_until(t, d)
        else:
            assert d.wait(20)
        # v5-only properties are left out, not an error
        assert t.publish("clawd/replies/x", b"{}", response_topic="a/b", correlation=b"1")
    finally:
        t.stop()


def _poll_until(t: Transport, d: object) -> bool:
    import time

    end = time.monotonic() + 20
    while time.monotonic() < end:
        t.poll(0.05)
        if d.acknowledged:  # type: ignore[attr-defined]
            return True
    return False


def test_v5_only_refused_by_a_311_broker_says_which_setting_to_change(fakes) -> None:
    f = fake(fakes, v5="v3-refusal")
    with pytest.raises(BrokerRefused) as err:
        transport(f.url, protocol="5").start(timeout=20)
    text = str(err.value)
    assert f.url.replace("mqtt://", "") in text and "Unsupported protocol version" in text
    assert 'protocol = "3.1.1"' in text and "TLS" not in text
    assert f.seen.connects == [5]  # no retry loop


def test_311_only_refused_by_a_v5_only_broker(fakes) -> None:
    f = fake(fakes, v311=1)
    with pytest.raises(BrokerRefused, match='protocol = "5"'):
        transport(f.url, protocol="3.1.1").start(timeout=20)
    # paho itself tries MQTT 3.1 (protocol name "MQIsdp") once after a 3.1.1 refusal
    assert f.seen.connects[0] == 4 and len(f.seen.connects) <= 2


@pytest.mark.parametrize(
    "code, phrase",
    [
        (4, "Bad user name or password"),
        (5, "Not authorized"),
    ],
)
def test_a_refused_311_connect_names_broker_and_reason_not_tls(fakes, code, phrase) -> None:
    f = fake(fakes, v5="v3-refusal", v311=code)
    with pytest.raises(BrokerRefused) as err:
        transport(f.url).start(timeout=20)
    text = str(err.value)
    assert phrase in text and f"127.0.0.1:{f.port}" in text
    assert "check [broker] username" in text and "TLS" not in text
    assert f.seen.connects == [5, 4]


def test_server_unavailable_is_retried_not_final(fakes) -> None:
    f = fake(fakes, v5="v3-refusal", v311=3)
    t = transport(f.url)
    with pytest.raises(BrokerError) as err:
        t.start(timeout=4)
    assert not isinstance(err.value, BrokerRefused)
    assert "Server unavailable" in str(err.value)
    assert len(f.seen.connects) >= 3  # v5, 3.1.1, and 3.1.1 again: still trying


def test_closed_unanswered_with_both_versions_lists_the_causes(fakes) -> None:
    f = fake(fakes, v5="close")
    f.v311 = -1  # close on 3.1.1 too
    t = transport(f.url)
    with pytest.raises(BrokerError) as err:
        t.start(timeout=5)
    text = str(err.value)
    assert "without answering CONNECT" in text and "tried MQTT v5 and 3.1.1" in text


def test_a_broker_allowing_qos_0_only_is_refused_clearly(fakes) -> None:
    f = fake(fakes, connack_props=props((MAXIMUM_QOS, 1, 0)))
    with pytest.raises(BrokerRefused, match="allows QoS 0 only .*needs QoS 1"):
        transport(f.url).start(timeout=20)
    assert f.seen.connects == [5]


def test_receive_maximum_caps_publishes_in_flight(fakes) -> None:
    f = fake(fakes, connack_props=props((RECEIVE_MAXIMUM, 2, 2)))
    t = transport(f.url)
    t.start(timeout=20)
    try:
        f.hold_acks.set()
        sent = [t.publish_tracked("clawd/results/x", f"{i}".encode()) for i in range(5)]
        # QoS 0 is not capped, and paho writes in order: once the marker is there, every
        # QoS 1 publish the cap let through is there too
        t.publish("clawd/marker", b"", qos=0)
        assert f.wait(lambda s: any(p.topic == "clawd/marker" for p in s.publishes))
        assert sum(p.qos == 1 for p in f.seen.publishes) == 2
        f.release()
        assert all(d.wait(20) for d in sent)
        assert sorted(p.payload for p in f.seen.publishes if p.qos) == [
            b"0",
            b"1",
            b"2",
            b"3",
            b"4",
        ]
    finally:
        t.stop()


def test_a_publish_over_the_maximum_packet_size_is_refused_not_sent(fakes, caplog) -> None:
    f = fake(fakes, connack_props=props((MAXIMUM_PACKET_SIZE, 4, 256)))
    t = transport(f.url)
    t.start(timeout=20)
    try:
        assert not t.fits("clawd/results/big", b"x" * 1000)
        assert not t.publish("clawd/results/big", b"x" * 1000)
        d = t.publish_tracked("clawd/results/big", b"x" * 1000)
        assert not d.acknowledged and d.refused and "Maximum Packet Size" in d.refused
        assert "256" in d.refused and "clawd/results/big" in d.refused
        assert t.publish_tracked("clawd/results/small", b"ok").wait(20)
        assert [p.topic for p in f.seen.publishes] == ["clawd/results/small"]
        assert t.connected.is_set()  # no disconnect, no loop
    finally:
        t.stop()


def test_no_retained_messages_means_publishes_go_unretained(fakes) -> None:
    f = fake(fakes, connack_props=props((RETAIN_AVAILABLE, 1, 0)))
    t = transport(f.url)
    t.start(timeout=20)
    try:
        assert t.publish_tracked("clawd/workers/w1", b"{}", retain=True).wait(20)
        assert [(p.topic, p.retain) for p in f.seen.publishes] == [("clawd/workers/w1", False)]
    finally:
        t.stop()


def test_url_list_moves_to_the_next_node(fakes) -> None:
    dead = fake(fakes)
    dead.close()  # nothing listens there now
    live = fake(fakes)
    t = transport(f"{dead.url},{live.url}")
    t.start(timeout=20)
    try:
        assert str(t.endpoint) == live.url
        assert t.publish_tracked("clawd/tasks/normal", b"{}").wait(20)
    finally:
        t.stop()


def test_url_list_fail_fast_gives_up_only_after_every_node(fakes) -> None:
    a, b = fake(fakes), fake(fakes)
    a.close()
    b.close()
    t = transport(f"{a.url},{b.url}")
    t.fail_fast = True
    with pytest.raises(BrokerError) as err:
        t.start(timeout=20)
    assert f"127.0.0.1:{a.port}" in str(err.value) and f"127.0.0.1:{b.port}" in str(err.value)


@pytest.mark.parametrize("driven", [False, True], ids=["threaded", "driven"])
def test_a_lost_node_is_left_for_the_next_and_unacked_publishes_resent(fakes, driven) -> None:
    a, b = fake(fakes), fake(fakes)
    t = transport(f"{a.url},{b.url}", driven=driven)
    t.start(timeout=20)
    try:
        assert str(t.endpoint) == a.url
        a.hold_acks.set()
        d = t.publish_tracked("clawd/tasks/normal", b"in flight")
        if driven:
            t.flush()
        assert a.wait(lambda s: len(s.publishes) == 1)
        a.close()  # the node dies with the publish unacknowledged
        if driven:
            assert _poll_until(t, d)
        else:
            assert d.wait(20)
        assert str(t.endpoint) == b.url
        assert [p.payload for p in b.seen.publishes] == [b"in flight"]
        assert t.wait_subscribed(20)
    finally:
        t.stop()
