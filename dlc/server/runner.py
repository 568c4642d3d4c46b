"""Serving the app: bind the socket first (so `--port 0` knows its port before the server starts) and run uvicorn
over it, in the foreground (`dlc serve`) or in a daemon thread (in-process use and tests)."""
from __future__ import annotations

import socket
import threading
from typing import Callable

from fastapi import FastAPI

from dlc.errors import DlcLMError


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind (host, port) now, so `--port 0` knows its port before the server starts; E629 when taken."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise DlcLMError(f"cannot listen on {host}:{port}: {e.strerror or e}", code="E629",
                         hint="pick another --port (--port 0 picks a free one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"


class Server:
    """uvicorn over an already bound socket; `on_ready(url)` runs once the server accepts requests.

    `run()` blocks (SIGINT/SIGTERM stop it gracefully when called from the main thread); `start()` runs it in a
    daemon thread and returns the URL once ready (for in-process use and tests); `stop()` ends it."""

    def __init__(self, app: FastAPI, sock: socket.socket, *, log_level: str = "warning") -> None:
        import uvicorn

        self.sock = sock
        self.url = url_of(sock)
        self._server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                                                     timeout_keep_alive=30))
        self._thread: threading.Thread | None = None

    def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        import asyncio

        async def main() -> None:
            async def announce() -> None:
                while not self._server.started:
                    if self._server.should_exit:
                        return
                    await asyncio.sleep(0.01)
                if on_ready is not None:
                    on_ready(self.url)

            task = asyncio.create_task(announce())
            await self._server.serve(sockets=[self.sock])
            task.cancel()

        if threading.current_thread() is threading.main_thread():
            import signal

            # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the handlers it found:
            # make that a no-op so a stopped server exits 0
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: None)
        asyncio.run(main())

    def start(self, timeout: float = 30.0) -> str:
        ready = threading.Event()
        self._thread = threading.Thread(target=self.run, args=(lambda _u: ready.set(),), daemon=True,
                                        name="dlc-serve")
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the server did not start")
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()
