"""The investigation agent: runbook routing, the event-sourced loop, tools and the model."""
