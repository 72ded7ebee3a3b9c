"""Test PKI made with the real openssl: a CA, a server cert for localhost, client certs.

Everything lands in one directory of the test's own; keys are written 0600.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


@dataclass(frozen=True)
class Pki:
    """Paths of one generated PKI."""

    dir: Path
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: a second, unrelated CA: trusting it instead of ``ca`` must fail verification
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.crt"
    _openssl(
        *f"req -x509 -newkey rsa:2048 -nodes -days {DAYS} -keyout {key} -out {cert}".split(),
        *("-subj", f"/CN=clawd test {name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=d,
    )
    key.chmod(0o600)
    return cert, key


def _leaf(d: Path, name: str, cn: str, ca: Path, ca_key: Path, ext: str) -> tuple[Path, Path]:
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    extfile = d / f"{name}.ext"
    extfile.write_text(ext)
    _openssl(
        *f"req -newkey rsa:2048 -nodes -keyout {key} -out {csr}".split(),
        "-subj",
        f"/CN={cn}",
        cwd=d,
    )
    _openssl(
        *f"x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -out {cert}".split(),
        *f"-days {DAYS} -sha256 -extfile {extfile}".split(),
        cwd=d,
    )
    key.chmod(0o600)
    return cert, key


def make_pki(d: Path, san: str = "DNS:localhost") -> Pki:
    """A CA, a server certificate valid for ``san`` only, a client certificate, another CA.

    The default SAN is the name ``localhost`` alone, so connecting to ``127.0.0.1`` with
    hostname checking on is a mismatch.
    """
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca(d, "ca")
    other_ca, _ = _ca(d, "other-ca")
    server_ext = f"subjectAltName={san}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    server_cert, server_key = _leaf(d, "server", "localhost", ca, ca_key, server_ext)
    client_ext = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
    client_cert, client_key = _leaf(d, "client", "clawd-client", ca, ca_key, client_ext)
    return Pki(d, ca, ca_key, server_cert, server_key, client_cert, client_key, other_ca)
