"""The `dask` back-end (not written yet)."""
