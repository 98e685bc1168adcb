"""`watchkeeper demo`: the daemon on its embedded defaults against a simulated environment."""
