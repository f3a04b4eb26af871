"""A node's BMC over IPMI (LAN): the only module that talks IPMI (pyghmi, a Python client;
never ipmitool's text). Each call gets a fresh session and a deadline of its own: pyghmi's
cached sessions hang for ~30 s on a BMC that stopped answering, then stay broken.
"""
from __future__ import annotations

import secrets
import socket
import struct
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

    def audit(self) -> list[str]:
        """What makes fencing through this BMC prove nothing: it opens a session with cipher
        suite 0 (no authentication at all), or it accepts a wrong password. [] when sound."""
        problems = []
        if offers_cipher_zero(self.address.host, self.address.port, self.timeout):
            problems.append("accepts unauthenticated IPMI (cipher suite 0)")
        wrong = IpmiBmc(BmcAddress(self.address.host, self.address.port, self.address.user,
                                   secrets.token_hex(8)), self.timeout)
        try:
            wrong.power_state()
            problems.append("accepts a wrong password")
        except BmcError:
            pass
        return problems


# ---------------------------------------------------------------------- RMCP+ (IPMI 2.0)
# Just enough of the wire format to ask a BMC which cipher suite it would open a session
# with; pyghmi always proposes an authenticated suite, so it cannot ask about suite 0.

RMCP_IPMI = b"\x06\x00\xff\x07"
AUTH_RMCPP = 0x06
OPEN_SESSION_REQUEST = 0x10
OPEN_SESSION_RESPONSE = 0x11
NO_MATCHING_CIPHER_SUITE = 0x11
# (authentication, integrity, confidentiality) algorithms of the suites a BMC should offer:
# 3 (HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) and 17 (HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128)
AUTHENTICATED_SUITES = {(1, 1, 1): 3, (3, 4, 1): 17}


def open_session_request(algorithms: tuple[int, int, int], console_session: int = 0x50564301
                         ) -> bytes:
    """An RMCP+ Open Session Request proposing one cipher suite's algorithms."""
    auth, integrity, confidentiality = algorithms
    payload = (bytes([0, 4, 0, 0]) + struct.pack("<I", console_session)
               + bytes([0, 0, 0, 8, auth, 0, 0, 0])
               + bytes([1, 0, 0, 8, integrity, 0, 0, 0])
               + bytes([2, 0, 0, 8, confidentiality, 0, 0, 0]))
    return (RMCP_IPMI + bytes([AUTH_RMCPP, OPEN_SESSION_REQUEST]) + bytes(8)
            + struct.pack("<H", len(payload)) + payload)


def proposed_algorithms(packet: bytes) -> tuple[int, int, int] | None:
    """The algorithms an Open Session Request proposes (None if packet is not one; an
    algorithm payload of length 0, "the BMC's default", reads as -1)."""
    if len(packet) < 16 + 32 or packet[:4] != RMCP_IPMI or packet[4] != AUTH_RMCPP \
            or packet[5] & 0x3F != OPEN_SESSION_REQUEST:
        return None
    p = packet[16:]
    return tuple(p[at + 4] & 0x3F if p[at + 3] else -1 for at in (8, 16, 24))  # type: ignore


def open_session_refusal(request: bytes, status: int = NO_MATCHING_CIPHER_SUITE) -> bytes:
    """The Open Session Response that refuses request with status."""
    p = request[16:]
    payload = bytes([p[0], status, 0, 0]) + p[4:8]
    return (RMCP_IPMI + bytes([AUTH_RMCPP, OPEN_SESSION_RESPONSE]) + bytes(8)
            + struct.pack("<H", len(payload)) + payload)


def offers_cipher_zero(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the BMC opens a session with cipher suite 0 (no authentication: any password
    works). No answer counts as a refusal (many BMCs drop what they refuse)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(open_session_request((0, 0, 0)), (host, port))
            answer = s.recv(512)
        except OSError:
            return False
    return len(answer) >= 18 and answer[5] & 0x3F == OPEN_SESSION_RESPONSE and answer[17] == 0
