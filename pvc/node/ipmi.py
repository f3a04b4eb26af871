"""A node's BMC over IPMI (LAN): the only module that talks IPMI (pyghmi, a Python client;
never ipmitool's text). Each call runs in a process of its own with a fresh session, killed at
its deadline, so a call pvc gave up on never acts later.
"""
from __future__ import annotations

import json
import secrets
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Protocol

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

    def _call(self, what: str, action: str) -> Any:
        """One IPMI call in a process of its own (a fresh pyghmi session), killed at the
        deadline: a call pvc gave up on can never act later (pyghmi shares its sessions
        between threads and resends a request until the BMC answers; a power-off that got
        through once the BMC was back would cut a node pvc had reported as not fenced)."""
        a = self.address
        request = json.dumps({"host": a.host, "port": a.port, "user": a.user,
                              "password": a.password, "action": action})
        try:   # the password goes through stdin, never the command line
            done = subprocess.run([sys.executable, "-m", "pvc.node.ipmi"], input=request,
                                  capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise BmcError(f"BMC {a} did not answer {what} within {self.timeout:g}s") from None
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            answer = {"error": (done.stderr.strip().splitlines() or ["no answer"])[-1]}
        if "error" in answer:
            raise BmcError(f"BMC {a} {what}: {answer['error']}")
        return answer.get("value")

    def power_state(self) -> str:
        state = self._call("power status", "status")
        if state not in ("on", "off"):
            raise BmcError(f"BMC {self.address} reported power {state!r}")
        return str(state)

    def power_off(self) -> None:
        self._call("power off", "off")

    def power_on(self) -> None:
        self._call("power on", "on")

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


def _serve_one_call() -> None:
    """The process side of IpmiBmc._call: one request on stdin, one JSON answer out."""
    request = json.loads(sys.stdin.read())
    try:
        from pyghmi.ipmi import command
        cmd = command.Command(bmc=request["host"], port=request["port"],
                              userid=request["user"].encode(),
                              password=request["password"].encode())
        if request["action"] == "status":
            value: Any = cmd.get_power().get("powerstate", "")
        else:
            value = cmd.set_power(request["action"]).get("powerstate", "")
        print(json.dumps({"value": value}))
    except Exception as e:   # pyghmi raises its own and plain exceptions alike
        text = str(e)
        print(json.dumps({"error": text if text not in ("", "None") else type(e).__name__}))


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


if __name__ == "__main__":
    _serve_one_call()
