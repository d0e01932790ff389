"""The inbound asyncio shell: listener, per-connection sessions, TLS."""
