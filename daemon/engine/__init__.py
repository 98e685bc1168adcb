"""The event log, the one writer (Ingestor), checkpoints, projections, the Reactor and timers."""
