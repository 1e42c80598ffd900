"""The `asyncio` back-end (not written yet)."""
