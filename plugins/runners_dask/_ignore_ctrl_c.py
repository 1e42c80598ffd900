"""Preloaded in the worker processes of the LocalCluster that runners starts (dask's `preload`).

Ctrl-C in a terminal reaches every process of its process group, the cluster's workers too; but
stopping them is the driver's part (it closes the cluster it started), and a worker that took the
KeyboardInterrupt itself printed its traceback, dozens of lines per worker, on the user's terminal.
"""

import signal
import threading

if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
