"""PktMask GUI: make packet captures safe to share (Remove Dupes, Anonymize IPs, Mask Payloads).

The package root is Qt-free: capture I/O, stages, the pipeline executor and the job workspace.
Only ``pktmask_gui.ui`` imports Qt.
"""

import os

__version__ = "0.1.0"

# numpy holds our tables, never a matrix: its BLAS needs no thread of its own (OpenBLAS starts one per core
# at import, which spins a while and makes every process of a batch a thread heavier).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
del _var
