"""Read the JSON-lines events the scoring services' collectors wrote (the reader lives beside the
writer, in ``pipeline.server.eventfiles``, because the collection sink reads them back too)."""

from __future__ import annotations

from pipeline.server.eventfiles import EventReader, read_events

__all__ = ["EventReader", "read_events"]
