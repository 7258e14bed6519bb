"""pcapng option lists inside metadata blocks: where they start, whether they hold a code, values rewritten
in place. Shared by the metadata scrub (``stages/scrub.py``: options removed) and Anonymize IPs
(``stages/anonymize.py``: address options mapped); parsing into and building from (code, value) lists is
``capture.parse_options`` / ``capture.build_options``. Bodies are in their section's byte order
(``endian``: "<" or ">", from ``capture.section_endian``); no object is made per option.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Container

from .capture import DSB, IDB, ISB, NRB, SHB

OPTION_HEADER = {"<": struct.Struct("<HH"), ">": struct.Struct(">HH")}     # code, length
_U32 = {"<": struct.Struct("<I"), ">": struct.Struct(">I")}
Buffer = bytes | bytearray | memoryview


def options_start(btype: int, body: Buffer, endian: str) -> int | None:
    """Where a metadata block's options begin inside its body, or None when it has no room for any."""
    if btype == SHB:
        start = 16
    elif btype == IDB:
        start = 8
    elif btype == ISB:
        start = 12
    elif btype == NRB:                      # name records up to nrb_record_end, then options
        unpack = OPTION_HEADER[endian].unpack_from
        start = 0
        while start + 4 <= len(body):
            rtype, rlen = unpack(body, start)
            start += 4 + ((rlen + 3) & ~3)
            if rtype == 0:
                break
    elif btype == DSB:                      # secrets type, secrets length, padded secrets, then options
        if len(body) < 8:
            return None
        start = 8 + ((_U32[endian].unpack_from(body, 4)[0] + 3) & ~3)
    else:
        return None
    return start if start < len(body) else None


def has_code(buf: Buffer, endian: str, codes: Container[int], known: Container[int] | None = None) -> bool:
    """True when the option bytes ``buf`` hold an option whose code is in ``codes`` or, when ``known`` is
    given, not in ``known`` (no allocation)."""
    unpack = OPTION_HEADER[endian].unpack_from
    off, end = 0, len(buf)
    while off + 4 <= end:
        code, length = unpack(buf, off)
        if code == 0:
            return False
        if code in codes or (known is not None and code not in known):
            return True
        off += 4 + ((length + 3) & ~3)
    return False


def rewrite_in_place(buf: bytearray, off: int, endian: str,
                     handlers: dict[int, Callable[[bytearray, int, int], bool]]) -> bool:
    """Rewrite option values in place from ``off`` on: ``handlers[code](buf, value_off, length)`` returns
    whether it changed the value; True when one did. Stops at opt_endofopt or an option cut short."""
    hdr = OPTION_HEADER[endian]
    changed = False
    end = len(buf)
    while off + 4 <= end:
        code, length = hdr.unpack_from(buf, off)
        if code == 0:
            break
        if off + 4 + length > end:
            break
        fn = handlers.get(code)
        if fn is not None and fn(buf, off + 4, length):
            changed = True
        off += 4 + ((length + 3) & ~3)
    return changed
