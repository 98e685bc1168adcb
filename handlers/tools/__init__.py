"""Read-only tools that touch the outside world (Prometheus, HTTP, local commands)."""
