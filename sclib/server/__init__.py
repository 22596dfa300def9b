"""The reference server (``pip install 'sclib[server]'``).

``create_app(settings)`` builds the FastAPI app; ``sclib serve`` runs it under
uvicorn. See ``docs/server.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app", "serve_in_background"]

if TYPE_CHECKING:
    from sclib.server.app import create_app
    from sclib.server.background import serve_in_background
else:

    def serve_in_background(*args: Any, **kwargs: Any) -> Any:
        """Run the server in a background thread (imports FastAPI when called)."""
        try:
            from sclib.server.background import serve_in_background as _serve
        except ImportError as exc:  # pragma: no cover - depends on the install
            from sclib.errors import MissingDependency

            raise MissingDependency(
                exc.name or "uvicorn", "server", "the sclib server"
            ) from exc
        return _serve(*args, **kwargs)

    def create_app(*args: Any, **kwargs: Any) -> Any:
        """Build the app (imports FastAPI only when called)."""
        try:
            from sclib.server.app import create_app as _create
        except ImportError as exc:  # pragma: no cover - depends on the install
            from sclib.errors import MissingDependency

            raise MissingDependency(
                exc.name or "fastapi", "server", "the sclib server"
            ) from exc
        return _create(*args, **kwargs)
