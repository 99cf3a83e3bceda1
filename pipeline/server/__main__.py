"""``python -m pipeline.server --config CONFIG.json``: serve one model until SIGTERM.

uvicorn with uvloop and httptools (without them keep-alive requests stall on delayed ACKs, see
docs/architecture.md), one worker, no access log unless the config asks (``access_log: true`` or
``log_level: debug``): a log line per request costs more than a fast prediction, and grows the log
without bound. A bad request logs nothing; a model failure logs one line (its traceback only at
debug).
SIGTERM stops accepting connections, lets in-flight requests finish, then flushes the collector.
Exit code 1 when the model cannot be loaded, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from pipeline.server import logs
from pipeline.server.app import create_app
from pipeline.server.config import ServerConfig

GRACE_SECONDS_AFTER_TIMEOUT = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.server", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="ServerConfig as JSON")
    args = parser.parse_args(argv)
    try:
        config = ServerConfig.from_json(args.config.read_text())
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: cannot read server config {args.config}: {error}", file=sys.stderr)
        return 1
    logs.configure(config.log_level, config.log_file)
    try:
        app = create_app(config)
    except Exception as error:  # a bad keys file, an unusable data folder
        print(f"error: {error}", file=sys.stderr)
        return 1
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, loop="uvloop", http="httptools", workers=1,
        access_log=config.access_log or config.log_level == "debug", log_level=config.log_level, lifespan="on",
        log_config=None,  # uvicorn's loggers go to ours: one file, rotated
        server_header=False,
        timeout_graceful_shutdown=int(config.request_settings.request_timeout_ms / 1000
                                      + GRACE_SECONDS_AFTER_TIMEOUT)))
    failed: list[str] = []

    def stop(reason: str) -> None:
        failed.append(reason)
        server.should_exit = True

    app.service.on_load_failure = stop
    server.run()
    if failed:
        print(f"error: {failed[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
