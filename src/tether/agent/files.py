"""File operations the agent performs inside the target: opening files as the target sees them
(for `netns:` that includes /etc/netns/NAME/* mounted over /etc by `ip netns exec`)."""
from __future__ import annotations

import errno
import logging
import os

from ..protocol import agent_wire
from .net import OpError

log = logging.getLogger("tether.agent")

# Flags that keep their meaning on a read-only open made on the program's behalf.
PASSED_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK


def open_readonly(req: agent_wire.Open) -> int:
    """A descriptor for req.path opened read-only here; the caller passes it back."""
    if req.flags & os.O_ACCMODE != os.O_RDONLY or req.flags & (os.O_CREAT | os.O_TRUNC):
        raise OpError(errno.EROFS, f"{req.path}: only read-only opens reach the target")
    if not req.path.startswith("/"):
        raise OpError(errno.EINVAL, f"{req.path}: the target opens absolute paths only")
    log.debug("open %s", req.path)
    try:
        return os.open(req.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | (req.flags & PASSED_FLAGS))
    except OSError as e:
        raise OpError(e.errno or errno.EIO, f"{req.path}: {e.strerror}") from None


def read_small(path: str) -> bytes:
    """The contents of path as the target sees it, for links that cannot carry descriptors
    (READ_FILE); at most agent_wire.READ_FILE_MAX bytes (the resolver's files are small)."""
    fd = open_readonly(agent_wire.Open(os.O_RDONLY, 0, path))
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(agent_wire.READ_FILE_MAX + 1)
        except OSError as e:
            raise OpError(e.errno or errno.EIO, f"{path}: {e.strerror}") from None
    if len(data) > agent_wire.READ_FILE_MAX:
        raise OpError(errno.EFBIG, f"{path}: larger than {agent_wire.READ_FILE_MAX} bytes")
    return data
