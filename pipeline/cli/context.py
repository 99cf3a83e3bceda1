"""What every command shares: which file, debug mode, and lazily opened adapters.

Commands receive an ``App`` through click's context (``@pass_app``) and ask it for the spec and
the registry; nothing is loaded until a command needs it, so ``mlops --help`` stays fast.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pipeline.registry.base import Registry
    from pipeline.spec.model import Spec


@dataclass
class App:
    file: str = "mlops.yaml"
    debug: bool = False
    _cache: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> Spec:
        """The loaded, validated mlops.yaml (SpecError if it is invalid)."""
        if "spec" not in self._cache:
            from pipeline.spec.loader import load

            self._cache["spec"] = load(Path(self.file))
        return self._cache["spec"]

    def registry(self) -> Registry:
        """The registry named by mlops.yaml (``registry:``), opened once, whichever its backend."""
        if "registry" not in self._cache:
            from pipeline.cli.wiring import make_registry

            self._cache["registry"] = make_registry(self.spec())
        return self._cache["registry"]

    def state_store(self):
        """Where the apply lock and the ledger live (beside the registry), opened once."""
        if "store" not in self._cache:
            from pipeline.cli.wiring import make_state_store

            self._cache["store"] = make_state_store(self.spec())
        return self._cache["store"]

    def state_dir(self) -> Path:
        """Where targets, locks and journals keep their state: ``.mlops/`` beside the registry."""
        return self.spec().state_dir()


def pass_app(func):
    """Decorator: pass the shared ``App`` as the first argument."""

    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, *args, **kwargs):
        return ctx.invoke(func, ctx.find_object(App), *args, **kwargs)

    return wrapper
