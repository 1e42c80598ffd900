"""The `ray` back-end (not written yet)."""
