"""tether: run a Linux program with its syscalls hooked by libtether.so."""

__version__ = "0.1.0"
