"""Brokers written in Python, from PyPI: amqtt (3.1.1) and mqttools (v5, QoS 0 only)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

from tests.brokers.base import Server, Unavailable


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise Unavailable(f"{dist} is not installed (pip install {dist})") from None


def _script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class Amqtt(Server):
    name = "amqtt"
    protocols = ("3.1.1",)

    @classmethod
    def check_installed(cls) -> None:
        _version("amqtt")

    def version(self) -> str:
        return _version("amqtt")

    def _launch(self):  # type: ignore[no-untyped-def]
        conf = self.dir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        return self.popen([_script("amqtt"), "-c", str(conf)])


class Mqttools(Server):
    name = "mqttools"
    protocols = ("5",)
    #: no persistent sessions: nothing is queued for a client that is away
    offline_queue = False

    @classmethod
    def check_installed(cls) -> None:
        _version("mqttools")

    def version(self) -> str:
        return _version("mqttools")

    def _launch(self):  # type: ignore[no-untyped-def]
        return self.popen(
            [_script("mqttools"), "broker", "--host", "127.0.0.1", "--port", str(self.port)]
        )
