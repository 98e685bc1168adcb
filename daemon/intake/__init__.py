"""How alerts and samples come in: the Source protocol, alert formats, stream payloads."""
