"""What a name or a reference may look like. Names become znode names: a reference such as
`..` or `../vms` must be refused before it reaches a path."""
from __future__ import annotations

import re

from pvc.core.errors import InvalidInput

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")          # VMs and nodes
OPERATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"


def valid_name(name: str) -> bool:
    return bool(NAME.fullmatch(name))


def check(kind: str, ref: str, pattern: re.Pattern[str] = NAME) -> str:
    """ref, if it can be a `kind` (node, VM, operation); otherwise one clear error."""
    if not pattern.fullmatch(ref):
        shown = repr(ref) if ref else "an empty name"
        raise InvalidInput(f"{shown} is not a valid {kind} reference ({NAME_RULE})"
                           if pattern is NAME else f"{shown} is not a valid {kind} id")
    return ref
