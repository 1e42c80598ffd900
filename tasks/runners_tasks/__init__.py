"""The workloads of the source document, registered as runners tasks through entry points."""
