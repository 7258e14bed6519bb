"""The settings file, shared by the GUI (which edits it) and the CLI (which reads it).

A plain JSON file in the platform's config folder; no Qt here. Operations are never stored: the CLI takes
them from flags, the GUI from its checkboxes.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

APP_DIR_NAME = "pktmask-gui"
SETTINGS_FILE = "settings.json"

# pcapng metadata the scrub removes by default when any operation runs (see stages/scrub.py).
SCRUB_ITEMS = {
    "comments": "Comments on packets, interfaces and sections",
    "name_resolution": "Name Resolution Blocks (addresses mapped to host names)",
    "decryption_secrets": "Decryption Secrets Blocks (TLS session keys)",
    "custom_blocks": "Custom blocks (vendor data)",
    "section_strings": "Capture hardware, OS and application strings",
    "interface_strings": "Interface names, descriptions, filters, OS and addresses",
}


# Output compression: "same" as the input, "none", or one format (compression.KINDS).
COMPRESS_CHOICES = ("same", "none", "gzip", "zstd", "lz4")


def config_dir() -> Path:
    """The folder holding settings.json and the anonymization key.

    PKTMASK_CONFIG_DIR wins (tests point it at a temp dir), then the platform's convention.
    """
    override = os.environ.get("PKTMASK_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / APP_DIR_NAME


def _default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass
class Settings:
    large_file_threshold_mb: int = 200      # inputs at or above this are hard-linked into the job dir
    memory_rss_mb: int = 1024               # memory pressure when the job's RSS exceeds this (0: off)
    memory_available_pct: int = 10          # ... or when system memory available falls below this % (0: off)
    parallel_jobs: int = field(default_factory=_default_jobs)
    temp_root: str = ""                     # "" = the system temp dir
    output_suffix: str = "-sanitized"       # <stem><suffix><ext>
    compress: str = "same"                  # output compression: same (as the input) | none | gzip | zstd | lz4
    keep_metadata: bool = False             # True: skip the pcapng metadata scrub
    scrub: dict = field(default_factory=lambda: {k: True for k in SCRUB_ITEMS})
    stage_options: dict = field(default_factory=dict)
    wireshark_path: str = ""                # "" = find Wireshark on PATH / in its usual install folder

    def temp_root_path(self) -> Path:
        return Path(self.temp_root) if self.temp_root else Path(tempfile.gettempdir())

    def options_for(self, stage_name: str) -> dict:
        return dict(self.stage_options.get(stage_name, {}))

    def validate(self) -> list[str]:
        """Every problem as a sentence a user understands; empty when the settings are usable."""
        problems = []
        if not isinstance(self.large_file_threshold_mb, int) or not 0 <= self.large_file_threshold_mb <= 10**7:
            problems.append("The large-file threshold must be a whole number of MB between 0 and 10,000,000.")
        if not isinstance(self.memory_rss_mb, int) or \
                not (self.memory_rss_mb == 0 or 64 <= self.memory_rss_mb <= 10**7):
            problems.append("The memory threshold must be 0 (off) or at least 64 MB.")
        if not isinstance(self.memory_available_pct, int) or not 0 <= self.memory_available_pct <= 90:
            problems.append("The available-memory threshold must be between 0 % (off) and 90 %.")
        if not isinstance(self.parallel_jobs, int) or not 1 <= self.parallel_jobs <= 64:
            problems.append("Parallel jobs must be between 1 and 64.")
        if self.temp_root:
            root = Path(self.temp_root)
            if not root.is_dir():
                problems.append(f"The temp folder {root} does not exist or is not a folder.")
            elif not os.access(root, os.W_OK | os.X_OK):
                problems.append(f"The temp folder {root} is not writable.")
        suffix = self.output_suffix
        if not isinstance(suffix, str) or not suffix.strip() or any(c in suffix for c in '/\\:*?"<>|\0'):
            problems.append("The output name suffix must be non-empty and contain no path separators "
                            "or characters that file names cannot hold.")
        if self.wireshark_path and not Path(self.wireshark_path).is_file():
            problems.append(f"The Wireshark program {self.wireshark_path} does not exist (leave the field empty "
                            "to find Wireshark on the PATH).")
        if self.compress not in COMPRESS_CHOICES:
            problems.append("Output compression must be one of: " + ", ".join(COMPRESS_CHOICES) + ".")
        problems.extend(self._validate_stage_options())
        return problems

    def _validate_stage_options(self) -> list[str]:
        from .stages import all_stages, validate_option  # late: stages import settings-free modules only

        problems = []
        for cls in all_stages():
            values = self.stage_options.get(cls.name, {})
            for opt in cls.OPTIONS:
                if opt.key in values:
                    message = validate_option(opt, values[opt.key])
                    if message:
                        problems.append(f"{cls.title}: {message}")
        return problems


def default_settings() -> Settings:
    return Settings()


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def load_settings(path: Path | None = None) -> Settings:
    """Read the settings file; a missing, unreadable or damaged file gives the defaults."""
    path = path or settings_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Settings()
    if not isinstance(raw, dict):
        return Settings()
    known = {f.name for f in fields(Settings)}
    settings = Settings(**{k: v for k, v in raw.items() if k in known})
    defaults = Settings()
    # A hand-edited file with a wrong type must not crash a run: fall back field by field.
    for f in fields(Settings):
        if type(getattr(settings, f.name)) is not type(getattr(defaults, f.name)):
            setattr(settings, f.name, getattr(defaults, f.name))
    for options in settings.stage_options.values():
        # an earlier version's "pass frames it cannot parse" switch is now one of three policies
        if isinstance(options, dict) and "allow_uninspected" in options and \
                options.pop("allow_uninspected") is True:
            options.setdefault("uninspected", "pass")
    merged_scrub = dict(defaults.scrub)
    merged_scrub.update({k: bool(v) for k, v in settings.scrub.items() if k in SCRUB_ITEMS})
    settings.scrub = merged_scrub
    return settings


def write_text_atomically(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` through a temp file beside it, fsync and replace: never half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write atomically, so that a crash never leaves half a settings file."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(asdict(settings), indent=2, sort_keys=True))
