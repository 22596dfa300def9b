"""A server in a background thread: for notebooks, tests and the demo.

>>> from sclib.server import serve_in_background          # doctest: +SKIP
>>> with serve_in_background(settings) as server:          # doctest: +SKIP
...     Client(server.url).health_check()

It binds 127.0.0.1 on a free port (unless told otherwise), waits until the server
accepts connections, and on exit stops it gracefully (the worker thread finishes or
releases its jobs).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sclib.settings import Settings

__all__ = ["BackgroundServer", "serve_in_background"]


class BackgroundServer:
    """uvicorn running an app in a daemon thread; see :func:`serve_in_background`."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        from sclib.server.http import uvicorn_config

        self.host = host
        settings = app.state.sclib.settings
        self._server = uvicorn.Server(
            uvicorn_config(app, settings, host=host, port=port, log_level="warning")
        )
        self._thread = threading.Thread(
            target=self._server.run, daemon=True, name="sclib-server"
        )
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=timeout)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_background(
    settings: Settings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **app_options: Any,
) -> BackgroundServer:
    """Start :func:`~sclib.server.create_app` on ``host:port`` (0: a free port)
    in a thread and return once it answers."""
    from sclib.server.app import create_app
    from sclib.server.auth import check_bind_address

    app = create_app(settings, **app_options)
    state = app.state.sclib
    check_bind_address(host, state.settings.no_auth)
    return BackgroundServer(app, host, port).start()
