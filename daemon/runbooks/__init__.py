"""Runbooks (model and loader) and the read-only Tool protocol shared by agent and actions."""
