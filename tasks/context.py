"""The node context of a worker process: created after the pool forks, once per process."""
from __future__ import annotations

import os

from pvc.core import config as configmod
from pvc.node.context import NodeContext

_context: NodeContext | None = None
_pid = 0


def node_context() -> NodeContext:
    global _context, _pid
    if _context is None or _pid != os.getpid():
        _context = NodeContext(configmod.load(configmod.locate()))
        _context.register_worker()
        _pid = os.getpid()
    return _context
