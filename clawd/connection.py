"""Where the broker is and how to connect to it: free of paho, read from the config.

:class:`Endpoint` is a parsed ``broker.url``; :class:`Options` everything else a
connection needs (identity, session, credentials, TLS, Last Will, subscriptions).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import urlparse

from clawd.errors import BrokerError


@dataclass(frozen=True)
class Endpoint:
    """Where the broker is: host/port (tcp, optionally TLS) or a unix socket path."""

    host: str
    port: int = 1883
    tls: bool = False
    unix: bool = False

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        u = urlparse(url)
        if u.scheme == "unix":
            if not u.path:
                raise BrokerError(f"broker url {url!r}: unix:// needs an absolute socket path")
            return cls(host=u.path, port=0, unix=True)
        if u.scheme in ("mqtt", "tcp", "mqtts", "ssl"):
            tls = u.scheme in ("mqtts", "ssl")
            return cls(
                host=u.hostname or "127.0.0.1", port=u.port or (8883 if tls else 1883), tls=tls
            )
        raise BrokerError(
            f"broker url {url!r}: expected mqtt://host[:port], mqtts://host[:port] or unix:///path"
        )

    @classmethod
    def parse_all(cls, urls: str | list[str]) -> list[Endpoint]:
        """The nodes of ``broker.url``: one url, a list, or urls separated by commas (as
        in ``$CLAWD_BROKER_URL``); a client moves to the next one when one fails."""
        found = [cls.parse(u.strip()) for u in url_list(urls)]
        if not found:
            raise BrokerError("broker url: no url given")
        if len(found) > 1 and len({(e.unix, e.tls) for e in found}) > 1:
            raise BrokerError(
                f"broker url {url_text(urls)!r}: the nodes of one list must all be mqtt://, "
                "all mqtts:// or all unix://"
            )
        return found

    def __str__(self) -> str:
        if self.unix:
            return f"unix://{self.host}"
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def url_list(urls: str | list[str]) -> list[str]:
    """``broker.url`` as a list of urls (a string may hold several, separated by commas)."""
    items = urls if isinstance(urls, list) else urls.split(",")
    return [u.strip() for u in items if u.strip()]


def url_text(urls: str | list[str]) -> str:
    """``broker.url`` as one string (several urls separated by commas), for the
    environment of child processes and for messages."""
    return ",".join(url_list(urls)) if isinstance(urls, list) else urls


@dataclass
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass
class Options:
    """How to connect; everything the transport needs from the config."""

    client_id: str
    #: "auto" (v5, falling back to 3.1.1 when the broker refuses v5), "5" or "3.1.1"
    protocol: str = "auto"
    clean_start: bool = True
    session_expiry: int = 0
    keepalive: int = 5
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    will: Will | None = None
    manual_ack: bool = False
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    #: QoS>0 messages in flight towards the broker; 0 = as many as the broker's receive
    #: maximum allows (paho rescans its window on every PUBACK, so a large one is slow)
    max_inflight: int = 0
    #: the owner drives the connection with poll() instead of paho's network thread
    driven: bool = False
    #: paho speed-ups (:mod:`clawd.paho_compat`): None follows $CLAWD_PAHO_COMPAT, False
    #: is paho as it comes
    compat: bool | None = None


def tls_context(options: Options) -> ssl.SSLContext:
    """A verifying TLS context; unreadable or invalid files are a BrokerError naming them."""
    try:
        ctx = ssl.create_default_context(cafile=options.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"tls_ca {options.tls_ca}: cannot load CA certificates: {exc}") from None
    if options.tls_cert:
        try:
            ctx.load_cert_chain(options.tls_cert, options.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(
                f"tls_cert {options.tls_cert} / tls_key {options.tls_key}: cannot load the "
                f"client certificate: {exc}"
            ) from None
    if options.tls_insecure:
        ctx.check_hostname = False
    return ctx
