"""A socket wrapper that lets the MQTT client read and write in bulk.

paho reads every packet with at least three ``recv`` calls (the command byte, each
remaining-length byte, then the body) and writes every packet with its own ``send``:
four to six system calls per message, which is most of what a busy connection costs.
:class:`BufferedSocket` fills a read buffer with one ``recv`` of up to ``FILL`` bytes and
serves paho's small reads from it; with ``batch`` on, it collects paho's writes until
:meth:`flush` sends them with one ``send``. ``pending()`` reports the buffered bytes, the
way an SSL socket reports its decrypted ones, so a ``select`` loop does not wait on data
that already arrived. Everything else is delegated to the wrapped socket.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

#: bytes one ``recv`` may bring in
FILL = 65536

#: what a non-blocking socket raises when it cannot go on now
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class BufferedSocket:
    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()
        #: collect writes until flush() (the owner drives the loop); else write through
        self.batch = False
        #: fills (fresh recv calls) still allowed before the owner resets it; None: any
        self.fills: int | None = None
        #: a send failed: the connection is broken, and the next recv says so
        self.error: OSError | None = None

    # -- reading -------------------------------------------------------------------------

    def recv(self, n: int) -> bytes:
        avail = len(self._rbuf) - self._rpos
        if not avail:
            if self.error is not None:
                raise self.error
            if self.fills is not None:
                if self.fills <= 0:
                    raise BlockingIOError
                self.fills -= 1
            data = self.sock.recv(FILL)
            if len(data) <= n:
                return bytes(data)
            self._rbuf, self._rpos, avail = data, 0, len(data)
        pos = self._rpos
        if n >= avail:
            out = self._rbuf[pos:]
            self._rbuf, self._rpos = b"", 0
            return out
        self._rpos = pos + n
        return self._rbuf[pos : pos + n]

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet handed out."""
        return len(self._rbuf) - self._rpos

    def pending(self) -> int:
        """Bytes readable without waiting: buffered here, or decrypted inside TLS."""
        inner = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
        return self.buffered + inner

    # -- writing -------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if not self.batch:
            return int(self.sock.send(data))
        if self.error is not None:
            raise self.error
        self._wbuf += data
        return len(data)

    @property
    def unsent(self) -> int:
        return len(self._wbuf)

    def flush(self) -> bool:
        """Send what was collected; False when the socket is full (wait until writable)."""
        buf = self._wbuf
        while buf:
            try:
                n = self.sock.send(buf)
            except WOULD_BLOCK:
                return False
            except OSError as exc:
                # the connection is gone: the next read reports it and paho reconnects
                self.error = exc
                buf.clear()
                return True
            del buf[:n]
        return True

    def close(self) -> None:
        """Send what is left (e.g. a DISCONNECT), briefly, then close."""
        if self._wbuf and self.error is None:
            with contextlib.suppress(OSError, ValueError):
                self.sock.settimeout(1.0)
                self.sock.sendall(self._wbuf)
        self._wbuf.clear()
        self.sock.close()

    def __getattr__(self, name: str) -> Any:
        # fileno, setblocking, settimeout, setsockopt, getpeername, ...
        return getattr(self.sock, name)
