"""The scoring service: one small, fast ASGI app per deployment instance.

Run it as ``python -m pipeline.server --config CONFIG.json`` (a ``ServerConfig`` as JSON), or build
the app in-process with ``pipeline.server.app.create_app(config)``. It is given a model *folder*
that the registry already verified, and never imports the registry itself.
"""

from pipeline.server.config import ServerConfig

__all__ = ["ServerConfig"]
