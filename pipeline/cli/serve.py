"""``mlops serve MODEL_REF``: serve one registered model version in the foreground."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from pipeline.cli.context import App, pass_app


@click.command()
@click.argument("model_ref", metavar="NAME[:VERSION]")
@click.option("--port", default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--keys-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Require Authorization: Bearer <key> with a key from this file (created if missing).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Collect inputs and predictions into this folder.")
@pass_app
def serve(app: App, model_ref: str, port: int, host: str, keys_file: Path | None, data_dir: Path | None) -> None:
    """Serve a registered model version (latest when no version is given) until Ctrl-C or SIGTERM.

    Answers POST /score, the Open Inference Protocol v2 (/v2/...), /metrics and /openapi.json.
    """
    from pipeline import keys as endpoint_keys
    from pipeline.errors import MlopsError
    from pipeline.registry.base import derived_folder
    from pipeline.server.config import ServerConfig
    from pipeline.spec.model import DataCollector, ModelRef

    try:
        ref = ModelRef.parse(model_ref)
    except ValueError as error:
        raise MlopsError(str(error)) from None
    registry = app.registry()
    version = registry.get(ref.name, ref.version)
    model_dir = registry.materialize(ref.name, version.version)
    if keys_file is not None:
        endpoint_keys.ensure_keys(keys_file)
    config = ServerConfig(
        model_dir=model_dir, flavor=version.flavor, model_name=ref.name, model_version=version.version,
        port=port, host=host, keys_file=keys_file, data_dir=data_dir, derived_dir=derived_folder(model_dir),
        data_collector=DataCollector(enabled=data_dir is not None))
    folder = Path(tempfile.mkdtemp(prefix="mlops-serve-"))
    (folder / "server.json").write_text(config.to_json())
    click.echo(f"Serving {ref.name}:{version.version} on http://{host}:{port}", err=True)
    os.execv(sys.executable, [sys.executable, "-m", "pipeline.server", "--config", str(folder / "server.json")])


COMMANDS = [serve]
