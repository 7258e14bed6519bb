"""PktMask GUI: make packet captures safe to share (Remove Dupes, Anonymize IPs, Mask Payloads).

The package root is Qt-free: capture I/O, stages, the pipeline executor and the job workspace.
Only ``pktmask_gui.ui`` imports Qt.
"""

__version__ = "0.1.0"
