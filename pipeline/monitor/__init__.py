"""Reading what the scoring services collected, and (later) statistics, drift and reports."""

from pipeline.monitor.collected import EventReader, read_events

__all__ = ["EventReader", "read_events"]
