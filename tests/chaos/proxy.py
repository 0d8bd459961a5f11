"""A loopback TCP proxy that can cut or slow what passes through it, for the chaos suite.

The operator reaches the API server (and a service reaches Prometheus) through one of these, so a
fault is injected on the path only that client uses: `blackhole()` holds every byte in both
directions and answers no new connection (what a dropped route looks like: no reset, the client's
own timeouts decide), `delay(s)` holds each request for `s` seconds before passing it on,
`restore()` lets everything through again (held connections resume, as TCP would after the route
came back).
"""

from __future__ import annotations

import socket
import threading
import time


class Proxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()  # cleared while blackholed
        self._open.set()
        self._delay_s = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{self.port}").start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        self._open.clear()

    def delay(self, seconds: float) -> None:
        self._delay_s = seconds

    def restore(self) -> None:
        self._delay_s = 0.0
        self._open.set()

    def close(self) -> None:
        self._stop.set()
        self._open.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._open.wait()  # a blackholed route: the connection is accepted and never answered
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()  # upstream down: the client sees the connection closed
            return
        server.settimeout(None)
        threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if request and self._delay_s:
                    time.sleep(self._delay_s)
                self._open.wait()
                if self._stop.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
