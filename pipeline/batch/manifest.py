"""``_manifest.json``: a run's lineage and each chunk's state, beside the parts.

It is rewritten atomically after each part (the part first, so a chunk marked done always has its
part), which is what makes ``--resume`` after a kill safe: a chunk is done or it is scored again.
A resumed run must score the same inputs (by sha256) with the same model (by digest) in the same
chunks; otherwise it is refused rather than mixing two runs in one output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.batch.writer import write_atomic
from pipeline.errors import MlopsError

MANIFEST = "_manifest.json"
ERRORS = "_errors.jsonl"  # "_": dataset readers (pyarrow, pandas, Spark) skip it when reading the folder
ERRORS_DIR = "_errors"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    lineage: dict[str, Any]  # model, version, digest, endpoint, scored_at, inputs (path → sha256)
    chunk_rows: int
    output_format: str
    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)  # "file#index" → part, rows, errors, state
    finished: bool = False

    @staticmethod
    def chunk_id(path: str, index: int) -> str:
        return f"{path}#{index}"

    def done(self, chunk: str) -> bool:
        return self.chunks.get(chunk, {}).get("state") == "done"

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "lineage": self.lineage, "chunk_rows": self.chunk_rows,
                "output_format": self.output_format, "finished": self.finished, "chunks": self.chunks}

    def save(self, folder: Path) -> None:
        write_atomic(folder / MANIFEST, json.dumps(self.to_json(), indent=1).encode())

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        path = folder / MANIFEST
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(data["lineage"], int(data["chunk_rows"]), data["output_format"], data["chunks"],
                       bool(data.get("finished")))
        except (ValueError, KeyError, TypeError) as error:
            raise MlopsError(f"{path} is not a batch manifest ({error}); remove it or pass --overwrite") from None

    def check_resumable(self, lineage: dict[str, Any], chunk_rows: int, output_format: str, where: Path) -> None:
        """MlopsError naming what differs from the run being resumed."""
        def files(data: dict[str, Any]) -> Any:  # standard input's digest is known only at the end
            return {path: digest for path, digest in (data.get("inputs") or {}).items() if path != "-"}

        differs = [f"model {self.lineage.get('digest')} → {lineage.get('digest')}"
                   if self.lineage.get("digest") != lineage.get("digest") else "",
                   "the input files or their content" if files(self.lineage) != files(lineage) else "",
                   f"--chunk-rows {self.chunk_rows} → {chunk_rows}" if self.chunk_rows != chunk_rows else "",
                   f"--output-format {self.output_format} → {output_format}"
                   if self.output_format != output_format else ""]
        changed = [text for text in differs if text]
        if changed:
            raise MlopsError(f"cannot resume the run in {where}: {'; '.join(changed)} changed; "
                             "pass --overwrite to start again")
