"""The `mpi` back-end (not written yet)."""
