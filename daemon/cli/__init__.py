"""The `watchkeeper` command: one HTTP client and the command groups."""
