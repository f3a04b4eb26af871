"""The bit of RMCP+ that pvc speaks itself: Open Session Requests, as the BMC audit sends them
and the sandbox's BMC guard reads them."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pvc.node import ipmi

algorithm = st.integers(min_value=0, max_value=0x3F)


@given(algorithm, algorithm, algorithm)
def test_a_request_says_which_algorithms_it_proposes(auth: int, integ: int, conf: int) -> None:
    request = ipmi.open_session_request((auth, integ, conf))
    assert ipmi.proposed_algorithms(request) == (auth, integ, conf)


def test_only_suites_3_and_17_count_as_authenticated() -> None:
    assert set(ipmi.AUTHENTICATED_SUITES.values()) == {3, 17}
    assert (0, 0, 0) not in ipmi.AUTHENTICATED_SUITES


@given(st.binary(max_size=80))
def test_other_packets_are_not_read_as_requests(packet: bytes) -> None:
    if packet[:6] != ipmi.RMCP_IPMI + bytes([ipmi.AUTH_RMCPP, ipmi.OPEN_SESSION_REQUEST]):
        assert ipmi.proposed_algorithms(packet) is None


def test_a_refusal_answers_the_request_it_refuses() -> None:
    request = ipmi.open_session_request((0, 0, 0), console_session=0x01020304)
    answer = ipmi.open_session_refusal(request)
    assert answer[5] == ipmi.OPEN_SESSION_RESPONSE
    assert answer[17] == ipmi.NO_MATCHING_CIPHER_SUITE
    assert answer[20:24] == bytes([4, 3, 2, 1])          # the console's session id, back
