"""A private PostgreSQL for the tests: initdb + pg_ctl in a temporary directory, listening
only on a unix socket there (never the machine's own server on 5432).

Import the fixtures into a test module: ``from tests.postgres import pg_server, pg_url``.
As root, the server runs as the ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _binary(name: str) -> str | None:
    for d in BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


class PgServer:
    """One PostgreSQL cluster of the tests' own."""

    def __init__(self) -> None:
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="clawd-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._db = itertools.count()

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + list(argv), check=True, capture_output=True, cwd=self.dir)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._run(self.initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8")
        opts = (
            f"-c listen_addresses='' -c port={self.port} -c unix_socket_directories={self.dir}"
            " -c fsync=off -c max_connections=200"
        )
        log = str(self.dir / "log")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", log, "-o", opts, "-w", "start")

    def stop(self) -> None:
        try:
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{db}?host={self.dir}&port={self.port}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = f"t{next(self._db)}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = PgServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of an empty database of this test's own."""
    return pg_server.new_database()
