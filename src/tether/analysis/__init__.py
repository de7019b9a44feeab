"""Binary analysis: ELF facts, Go version and hook plan (`tether inspect`, the session).

What callers need without loading the analysis itself (tether exec's start-up path finds its
reports in the cache: analysis/cache.py)."""

ELF_MAGIC = b"\x7fELF"


class ElfError(Exception):
    """The file is not an ELF file, or is truncated or corrupt."""
