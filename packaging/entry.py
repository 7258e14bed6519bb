"""The bundle's entry point (PyInstaller runs this file as ``__main__``).

``freeze_support()`` comes first: the engine runs each job in a ``spawn`` child process, which in a frozen
build is this same executable started again with multiprocessing's arguments; freeze_support() turns such a
start into the child's work and exits, before anything else (the window, the single-instance check, a
sweep of temp folders) can run a second time.
"""
import multiprocessing

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from pktmask_gui.cli import entry

    entry()
