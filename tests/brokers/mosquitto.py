"""mosquitto, with persistence on (what a production install has)."""

from __future__ import annotations

import getpass
import shutil
import subprocess

from tests.brokers.base import Server, Unavailable

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto(Server):
    name = "mosquitto"
    protocols = ("5", "3.1.1")

    @classmethod
    def check_installed(cls) -> None:
        if not shutil.which(MOSQUITTO):
            raise Unavailable("mosquitto is not installed (apt-get install mosquitto)")

    def version(self) -> str:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout
        return out.split("version", 1)[1].split()[0] if "version" in out else "?"

    def _launch(self) -> subprocess.Popen[bytes]:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"user {getpass.getuser()}\npersistence true\npersistence_location {self.dir}/\n"
            "max_queued_messages 0\nlog_type error\nlog_type warning\n"
        )
        return self.popen([MOSQUITTO, "-c", str(conf)])
