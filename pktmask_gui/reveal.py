"""Reveal, for the key holder: the original of an anonymized address (Crypto-PAn is invertible with the key).

``reveal(text, key, options)`` -> a ``Revealed``: the address as given and what it can have been under the
anonymizer's rules (``options``: Anonymize IPs' options, for the networks kept as they are): the inverse
mapping when that address would have been anonymized, the address itself when it lies where addresses
stay as they are, both when both hold (a mapped address that landed on a kept one: the job warned of
such collisions). MAC addresses and host names are one-way (their mapping drops bits or is a keyed hash):
their originals are only in the mapping export (``--export-mapping``).

``main(argv)`` is ``pktmask-gui reveal [--key-file K] ADDRESS...``: one line per address with its original
(``--pairs``: the address, a tab, the original); an address that may also be one kept as it is gets the
original it was anonymized from, and a note on stderr; exit 0 when every address was revealed, 1 when
one is no address this key and these rules can give, 2 on a usage error (an argument that is not an
address included).
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Revealed:
    text: str
    originals: list                 # ipaddress objects, the anonymized-from one first
    error: str = ""                 # why none (not an address)

    def line(self, pairs: bool = False) -> str:
        """The original (the one it was anonymized from, when it may also be one kept as it is)."""
        text = str(self.originals[0]) if self.originals else "-"
        return f"{self.text}\t{text}" if pairs else text


class Revealer:
    """Reveals addresses with one key and one set of keep rules."""

    def __init__(self, key: bytes, options: dict | None = None):
        from .stages import StageContext
        from .stages.anonymize import AnonymizeStage

        allowed = {o.key for o in AnonymizeStage.OPTIONS}
        self._stage = AnonymizeStage({k: v for k, v in (options or {}).items() if k in allowed
                                      and k != "export_mapping"}, StageContext(key=key))
        self._mapper = self._stage.mapper
        self._cp = self._mapper.cp

    def reveal(self, text: str) -> Revealed:
        try:
            addr = ipaddress.ip_address(text.strip().strip("[]"))
        except ValueError:
            return Revealed(text, [], "not an IPv4 or IPv6 address")
        value = int(addr)
        if addr.version == 4:
            back = self._cp.deanonymize_v4(value)
            kept_back, kept_self = self._mapper.kept4(back), self._mapper.kept4(value)
        else:
            back = self._cp.deanonymize_v6(value)
            kept_back, kept_self = self._mapper.kept6(back), self._mapper.kept6(value)
        found = []
        if not kept_back:
            found.append(ipaddress.ip_address(back) if addr.version == 6 else ipaddress.IPv4Address(back))
        if kept_self and addr not in found:
            found.append(addr)
        return Revealed(text, found)


def main(argv: list[str]) -> int:
    from . import keys
    from .settings import load_settings

    parser = argparse.ArgumentParser(
        prog="pktmask-gui reveal",
        description="Print the original of each anonymized address (for the holder of the key). The keep "
                    "rules come from the settings file, as for 'process'; the flags below override them.")
    parser.add_argument("addresses", nargs="+", metavar="ADDRESS", help="anonymized IPv4 or IPv6 addresses")
    parser.add_argument("--key-file", metavar="PATH", help="the key the capture was anonymized with "
                        "(default: your key in the config folder)")
    parser.add_argument("--keep", action="append", metavar="CIDR", help="networks kept as they are (repeatable)")
    parser.add_argument("--anonymize-only", action="append", metavar="CIDR",
                        help="only these networks were anonymized (repeatable)")
    parser.add_argument("--internal-only", action="store_true", help="only the private ranges were anonymized")
    parser.add_argument("--pairs", action="store_true", help="print each address, a tab, then its original")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    options = load_settings().options_for("anonymize")
    if args.keep is not None:
        options["keep_cidrs"] = list(args.keep)
    only = list(args.anonymize_only or [])
    if args.internal_only:
        from .hostnames import PRIVATE_NETWORKS
        only += [n for n in PRIVATE_NETWORKS if n not in only]
    if only:
        options["anonymize_only"] = only
    from .stages import StageError, validate_option
    from .stages.anonymize import AnonymizeStage
    for opt in AnonymizeStage.OPTIONS:
        if opt.key in options and validate_option(opt, options[opt.key]):
            sys.stderr.write(f"pktmask-gui reveal: error: {validate_option(opt, options[opt.key])}\n")
            return 2
    try:
        if args.key_file:
            key = keys.load_key_file(Path(args.key_file))
        else:
            path = keys.key_path()
            if not path.exists():
                sys.stderr.write(f"pktmask-gui reveal: error: there is no key at {path}: give the key the "
                                 "capture was anonymized with (--key-file)\n")
                return 2
            key = keys.load_key_file(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
        sys.stderr.write(f"pktmask-gui reveal: error: cannot use the key file: {reason}\n")
        return 2
    try:
        revealer = Revealer(key, options)
    except StageError as exc:
        sys.stderr.write(f"pktmask-gui reveal: error: {exc}\n")
        return 2
    import ipaddress as _ip
    for text in args.addresses:
        try:
            _ip.ip_address(text.strip().strip("[]"))
        except ValueError:
            sys.stderr.write(f"pktmask-gui reveal: error: '{text}' is not an IPv4 or IPv6 address\n")
            return 2
    status = 0
    for text in args.addresses:
        result = revealer.reveal(text)
        sys.stdout.write(result.line(args.pairs) + "\n")
        if not result.originals:
            sys.stderr.write(f"pktmask-gui reveal: {text}: no address maps to it with this key and these rules\n")
            status = 1
        elif len(result.originals) > 1:
            sys.stderr.write(f"pktmask-gui reveal: note: {text} is the anonymized form of {result.originals[0]}, "
                             "and also lies where addresses are kept as they are: if it was kept, it is its own "
                             "original\n")
    return status
