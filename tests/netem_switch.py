"""A learning Ethernet switch in user space that delays and drops frames, for kernels
without ``sch_netem``.

    ip netns exec SWITCH python -m tests.netem_switch --delay 0.05 --loss 0.01 p1 p2 p3

It does what ``tc qdisc add dev pN root netem delay 50ms loss 1%`` on every port of a
bridge does: every frame leaving through a port is held ``--delay`` seconds (order kept,
like netem with a constant delay) and dropped with probability ``--loss``. The ports are
the switch-side ends of the hosts' veth pairs, taken off the kernel bridge while this
runs. It prints ``ready`` once every port is open and runs until SIGTERM.

Frames are read with their virtio-net header (``PACKET_VNET_HDR``) and written back with
it, so a segmentation-offloaded frame or one whose checksum is left to the hardware
leaves as the kernel expects; the hosts send one segment per frame (``gso_max_segs 1``),
so a loss drops one segment as on a wire.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import random
import selectors
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
#: struct virtio_net_hdr without num_buffers
VNET_HDR_LEN = 10
BROADCAST_BIT = 0x01


def open_port(name: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    # what this switch sends out of a port must not come back in through it
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((name, 0))
    s.setblocking(False)
    return s


def run(ports: list[str], delay: float, loss: float, seed: int | None) -> None:
    rng = random.Random(seed)
    socks = {name: open_port(name) for name in ports}
    sel = selectors.DefaultSelector()
    for name, s in socks.items():
        sel.register(s, selectors.EVENT_READ, name)
    #: MAC address -> the port it was last seen on
    where: dict[bytes, str] = {}
    #: (due, sequence, port, frame): frames waiting for their delay to pass
    pending: list[tuple[float, int, str, bytes]] = []
    seq = 0
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready", flush=True)
    while not stop:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, port, frame = heapq.heappop(pending)
            # a port that is down (a partition) or whose queue is full loses the frame
            with contextlib.suppress(OSError):
                socks[port].send(frame)
        timeout = max(0.0, pending[0][0] - now) if pending else 0.5
        for key, _ in sel.select(timeout):
            src_port = key.data
            s = key.fileobj
            assert isinstance(s, socket.socket)
            for _ in range(64):
                try:
                    frame = s.recv(65536 + VNET_HDR_LEN)
                except OSError:  # nothing more to read now (or the port went down)
                    break
                if len(frame) < VNET_HDR_LEN + 14:
                    continue
                dst = frame[VNET_HDR_LEN : VNET_HDR_LEN + 6]
                src = frame[VNET_HDR_LEN + 6 : VNET_HDR_LEN + 12]
                where[src] = src_port
                if dst[0] & BROADCAST_BIT or dst not in where:
                    outs = [p for p in socks if p != src_port]
                else:
                    outs = [where[dst]] if where[dst] != src_port else []
                due = time.monotonic() + delay
                for port in outs:
                    # each port's egress drops on its own, as one netem per port would
                    if loss and rng.random() < loss:
                        continue
                    seq += 1
                    heapq.heappush(pending, (due, seq, port, frame))
    for s in socks.values():
        s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.netem_switch", description=__doc__)
    p.add_argument("--delay", type=float, default=0.0, help="seconds each frame is held")
    p.add_argument("--loss", type=float, default=0.0, help="share of frames dropped, 0-1")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("ports", nargs="+")
    args = p.parse_args(argv)
    run(args.ports, args.delay, args.loss, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
