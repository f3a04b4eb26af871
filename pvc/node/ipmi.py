"""A node's BMC over IPMI (LAN): the only module that talks IPMI (pyghmi, a Python client;
never ipmitool's text). Each call gets a fresh session and a deadline of its own: pyghmi's
cached sessions hang for ~30 s on a BMC that stopped answering, then stay broken.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from pvc.core.errors import PvcError

CALL_TIMEOUT = 6.0


class BmcError(PvcError):
    """The BMC did not answer or refused."""


@dataclass(frozen=True)
class BmcAddress:
    host: str
    port: int
    user: str
    password: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class Bmc(Protocol):
    def power_state(self) -> str:
        """"on" or "off"."""

    def power_off(self) -> None:
        """Cut the power (not a clean shutdown)."""

    def power_on(self) -> None: ...


class IpmiBmc:
    def __init__(self, address: BmcAddress, timeout: float = CALL_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """fn(a new pyghmi Command), within the deadline, in a thread of its own (pyghmi
        blocks and has no deadline we can trust)."""
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                from pyghmi.ipmi import command
                a = self.address
                cmd = command.Command(bmc=a.host, port=a.port, userid=a.user.encode(),
                                      password=a.password.encode())
                result["value"] = fn(cmd)
            except Exception as e:   # pyghmi raises its own and plain exceptions alike
                result["error"] = str(e) or type(e).__name__

        worker = threading.Thread(target=run, name=f"ipmi-{what}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise BmcError(f"BMC {self.address} did not answer {what} within {self.timeout:g}s")
        if "error" in result:
            raise BmcError(f"BMC {self.address} {what}: {result['error']}")
        return result.get("value")

    def power_state(self) -> str:
        state = self._call("power status", lambda c: c.get_power()).get("powerstate", "")
        if state not in ("on", "off"):
            raise BmcError(f"BMC {self.address} reported power {state!r}")
        return str(state)

    def power_off(self) -> None:
        self._call("power off", lambda c: c.set_power("off"))

    def power_on(self) -> None:
        self._call("power on", lambda c: c.set_power("on"))
