"""The running daemon: supervisor, composition root, sd_notify, memory upkeep, logging."""
