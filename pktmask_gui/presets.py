"""Presets: named sets of operations and options for the usual reasons to share a capture.

A preset sets options, nothing hidden: on the command line (``--preset NAME``) it counts as choosing the
operations, and the flags given beside it win (operation flags replace its operations, option flags its
options); in the window it ticks the operations and the options shown under them, which the user sees
and can change before Start. Options a preset does not name keep their values.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .hostnames import PRIVATE_NETWORKS


@dataclass(frozen=True)
class Preset:
    key: str                    # --preset name
    title: str                  # the menu's words
    description: str
    operations: tuple
    options: dict = field(default_factory=dict)     # stage name -> {option key: value}


PRESETS = (
    Preset("vendor", "Share with a vendor",
           "All three operations; host names pseudonymized; the TLS handshake kept for the vendor's analysis.",
           ("dedup", "anonymize", "mask"),
           {"anonymize": {"pseudonymize_names": True}, "mask": {"keep_handshake": True}}),
    Preset("publish", "Publish",
           "All three operations; MAC addresses and host names anonymized too; every network anonymized.",
           ("dedup", "anonymize", "mask"),
           {"anonymize": {"anonymize_macs": True, "keep_oui": False, "pseudonymize_names": True,
                          "anonymize_only": []}}),
    Preset("internal", "Troubleshoot internally",
           "Remove Dupes and Anonymize IPs, internal networks only: public servers stay readable.",
           ("dedup", "anonymize"),
           {"anonymize": {"anonymize_only": list(PRIVATE_NETWORKS)}}),
)


def find(name: str) -> Preset | None:
    """The preset called ``name``: its key or its title, any case, spaces or dashes alike."""
    want = "".join(ch for ch in str(name).lower() if ch.isalnum())
    for preset in PRESETS:
        if want in (preset.key, "".join(ch for ch in preset.title.lower() if ch.isalnum())):
            return preset
    return None


def names() -> str:
    return ", ".join(f"{p.key} ({p.title})" for p in PRESETS)


def apply(preset: Preset, settings) -> None:
    """Set the preset's options in ``settings`` (its stage_options), leaving the others as they are."""
    for stage, values in preset.options.items():
        options = settings.stage_options.setdefault(stage, {})
        for key, value in values.items():
            options[key] = list(value) if isinstance(value, list) else value
