"""Reading what the scoring services collected, and the monitor's statistics (``drift``), report
(``report``, ``html``) and CI thresholds (``gate``)."""

from pipeline.monitor.collected import EventReader, read_events

__all__ = ["EventReader", "read_events"]
