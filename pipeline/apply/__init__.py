"""Carrying out a plan safely: observe, the apply service, executor, journal, lock and ledger."""
