"""Transports: how an action or diagnostic reaches its target host (local, ssh)."""
