"""aedes (Node.js, MQTT 3.1.1), in-memory persistence: `npm install` in tests/brokers/aedes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.brokers.base import Server, Unavailable

HERE = Path(__file__).resolve().parent / "aedes"
NODE = shutil.which("node") or "node"


class Aedes(Server):
    name = "aedes"
    protocols = ("3.1.1",)

    @classmethod
    def check_installed(cls) -> None:
        if not shutil.which(NODE):
            raise Unavailable("node is not installed (apt-get install nodejs npm)")
        if not (HERE / "node_modules" / "aedes").is_dir():
            raise Unavailable(f"aedes is not installed (npm install --prefix {HERE})")

    def version(self) -> str:
        pkg = HERE / "node_modules" / "aedes" / "package.json"
        return str(json.loads(pkg.read_text())["version"])

    def _launch(self) -> subprocess.Popen[bytes]:
        return self.popen([NODE, str(HERE / "aedes-server.js"), str(self.port)])
