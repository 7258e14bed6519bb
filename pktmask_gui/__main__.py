"""``python -m pktmask_gui``: the same as the ``pktmask-gui`` command."""
import multiprocessing
import sys

from .cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()    # frozen builds: child processes re-enter here
    sys.exit(main())
