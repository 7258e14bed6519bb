"""``python -m pktmask_gui``: the same as the ``pktmask-gui`` command."""
import multiprocessing

from .cli import entry

if __name__ == "__main__":
    multiprocessing.freeze_support()    # frozen builds: child processes re-enter here
    entry()
