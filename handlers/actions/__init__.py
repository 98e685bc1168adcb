"""Action executors: shell, http, systemd, alertmanager_silence, webhook (daemon/action_exec.py)."""
