"""Several hosts on this machine: network namespaces joined by veth pairs through a switch.

    with Network() as net:
        broker = net.host("broker")          # namespace clawd-<pid>-<n>-broker, 10.77.0.2
        worker = net.host("w1")
        proc = worker.popen([sys.executable, "-m", "clawd", "run", ...])
        worker.partition()                   # its cable pulled: nothing in, nothing out
        worker.heal()
        net.impair(delay=0.05, loss=0.01)    # on every link, both ways

Each host is a namespace of its own with only a loopback and ``eth0`` (10.77.0.N/24),
whose peer is a port of a switch living in one more namespace: a kernel bridge, or,
while the network is impaired on a kernel without ``sch_netem``, the user-space switch
of :mod:`tests.netem_switch`. Nothing is attached to the machine's own namespace, so all
traffic stays on these namespaces and loopback; two networks may use the same addresses.

Every name starts with ``clawd-<pid>-<n>-``. ``close()`` (the context manager's exit, and
a finalizer at interpreter exit) kills the processes started on the hosts, by pid, and
deletes every namespace, which takes its links with it. Namespaces left by a run that was
killed outright are deleted by the next run (their pid is gone). Needs root and iproute2.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"
ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.77.0"
_networks = itertools.count()


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, or no iproute2)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def _in(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in namespace ``ns``."""
    r = subprocess.run([IP, "netns", "exec", ns, *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"in {ns}: {' '.join(args)}: {r.stderr.strip()}")
    return r


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not os.path.exists(IP):
        return "iproute2 (the ip command) is not installed"
    return None


def sweep_stale() -> list[str]:
    """Delete ``clawd-<pid>-...`` namespaces whose process is gone (a run killed outright)."""
    gone = []
    for name in _ip("netns", "list", check=False).stdout.split():
        m = re.fullmatch(r"clawd-(\d+)-\d+-.+", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _kill_namespace_procs(name)
            _ip("netns", "del", name, check=False)
            gone.append(name)
    return gone


def _kill_namespace_procs(ns: str) -> None:
    """SIGKILL what still runs in a namespace this code made (it outlived its run)."""
    r = _ip("netns", "pids", ns, check=False)
    for pid in r.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def netem_available(ns: str, dev: str) -> bool:
    """Whether the kernel has the netem qdisc (tried on a real port, then taken off)."""
    r = _in(ns, TC, "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms", check=False)
    if r.returncode != 0:
        return False
    _in(ns, TC, "qdisc", "del", "dev", dev, "root", check=False)
    return True


class Host:
    """One machine: a namespace with ``eth0`` at :attr:`addr` plugged into the switch."""

    def __init__(self, net: Network, name: str, index: int) -> None:
        self.net = net
        self.name = name
        self.ns = f"{net.prefix}{name}"
        self.index = index
        self.addr = f"{SUBNET}.{index + 1}"
        #: the switch-side end of this host's cable
        self.port = f"p{index}"
        self.procs: list[subprocess.Popen[Any]] = []
        _ip("netns", "add", self.ns)
        net.namespaces.append(self.ns)
        _ip(
            "link", "add", "eth0", "netns", self.ns, "type", "veth",
            "peer", "name", self.port, "netns", net.switch,
        )  # fmt: skip
        _in(self.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        # one segment per frame: a lost frame is one lost segment, as on a wire
        _ip("-n", self.ns, "link", "set", "eth0", "gso_max_segs", "1")
        _ip("-n", self.ns, "addr", "add", f"{self.addr}/24", "dev", "eth0")
        _ip("-n", self.ns, "link", "set", "eth0", "up")
        _ip("-n", net.switch, "link", "set", self.port, "master", "br0")
        _ip("-n", net.switch, "link", "set", self.port, "up")

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on this host."""
        return [IP, "netns", "exec", self.ns, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` on this host (``ip netns exec`` execs it: the pid is its own)."""
        p = subprocess.Popen(self.command(argv), **kw)
        self.procs.append(p)
        self.net.procs.append(p)
        return p

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        kw.setdefault("timeout", 60)
        return subprocess.run(self.command(argv), **kw)

    def python(self, *args: str) -> list[str]:
        """``python -m ...`` with this interpreter (the venv's) and this checkout."""
        return [sys.executable, *args]

    def partition(self) -> None:
        """Pull the cable: the switch port goes down, nothing reaches or leaves the host.
        Its processes are not told; their sockets just hear nothing."""
        _ip("-n", self.net.switch, "link", "set", self.port, "down")

    def heal(self) -> None:
        _ip("-n", self.net.switch, "link", "set", self.port, "up")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process started on this host (by pid) and reap them."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.addr})"


class Network:
    """A switch and the hosts plugged into it; a context manager that removes it all."""

    def __init__(self, label: str = "") -> None:
        why = available()
        if why:
            raise NetnsUnavailable(why)
        sweep_stale()
        n = next(_networks)
        self.prefix = f"clawd-{os.getpid()}-{n}-{label + '-' if label else ''}"
        self.switch = f"{self.prefix}switch"
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self.impaired: tuple[float, float] | None = None
        #: how the impairment is made: "netem" (the kernel's) or "user-space switch"
        self.impairment_kind = ""
        self._switch_proc: subprocess.Popen[str] | None = None
        self._closed = False
        # removed even if the test forgets, or the interpreter exits on an error
        #: every process started on any host (the finalizer kills those still running)
        self.procs: list[subprocess.Popen[Any]] = []
        self._finalizer = weakref.finalize(self, _remove, self.namespaces, self.procs)
        atexit.register(self._finalizer)
        try:
            _ip("netns", "add", self.switch)
            self.namespaces.append(self.switch)
            _in(self.switch, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            # forward at once: no spanning tree, no learning delay
            _ip("-n", self.switch, "link", "set", "br0", "type", "bridge", "forward_delay", "0")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def host(self, name: str) -> Host:
        """A new host on this network, named ``name`` (letters, digits, '-')."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,20}", name) or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        if self._switch_proc is not None:
            raise RuntimeError("add hosts before impairing the network")
        h = Host(self, name, len(self.hosts) + 1)
        self.hosts[name] = h
        return h

    def impair(self, delay: float, loss: float, seed: int | None = None) -> str:
        """Delay every frame by ``delay`` seconds and drop ``loss`` of them (0-1), on every
        link, both ways (each frame crosses one switch port on its way out). With the
        kernel's netem when it has it, else with the user-space switch. Returns which."""
        self.clear_impairment()
        ports = [h.port for h in self.hosts.values()]
        if ports and netem_available(self.switch, ports[0]):
            for port in ports:
                _in(
                    self.switch, TC, "qdisc", "add", "dev", port, "root", "netem",
                    "delay", f"{delay * 1000:g}ms", "loss", f"{loss * 100:g}%",
                )  # fmt: skip
            self.impairment_kind = "netem"
        else:
            for port in ports:
                _ip("-n", self.switch, "link", "set", port, "nomaster")
            argv = [sys.executable, "-m", "tests.netem_switch", "--delay", str(delay)]
            argv += ["--loss", str(loss), *([] if seed is None else ["--seed", str(seed)])]
            p = self._switch_proc = subprocess.Popen(
                [IP, "netns", "exec", self.switch, *argv, *ports],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("the user-space switch did not start")
            self.impairment_kind = "user-space switch"
        self.impaired = (delay, loss)
        return self.impairment_kind

    def clear_impairment(self) -> None:
        """Back to a plain bridge."""
        if self.impaired is None:
            return
        if self._switch_proc is not None:
            self._switch_proc.terminate()
            self._switch_proc.wait(10)
            self._switch_proc = None
            for h in self.hosts.values():
                _ip("-n", self.switch, "link", "set", h.port, "master", "br0")
        else:
            for h in self.hosts.values():
                _in(self.switch, TC, "qdisc", "del", "dev", h.port, "root", check=False)
        self.impaired = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for h in self.hosts.values():
            h.kill()
        if self._switch_proc is not None and self._switch_proc.poll() is None:
            self._switch_proc.kill()
            self._switch_proc.wait(10)
        self._finalizer()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _remove(namespaces: list[str], procs: list[subprocess.Popen[Any]]) -> None:
    """Kill what runs on the hosts and delete the namespaces (and so every link)."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
    for ns in reversed(namespaces):
        _kill_namespace_procs(ns)
        _ip("netns", "del", ns, check=False)
    namespaces.clear()


def leftovers(prefix: str) -> list[str]:
    """Namespaces whose name starts with ``prefix`` (a test checks none are left)."""
    return [n for n in _ip("netns", "list", check=False).stdout.split() if n.startswith(prefix)]
