"""The HTTP API, the console and Slack interactivity: faces over the capabilities."""
