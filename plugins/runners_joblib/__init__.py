"""The `joblib` back-end (not written yet)."""
