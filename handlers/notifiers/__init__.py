"""Chat and webhook notifiers, one module per system, each a `daemon.notify.ChatNotifier`."""
