"""Notifications: the pipeline, message content and the escalation reaction."""
