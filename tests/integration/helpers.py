"""Shared helpers of the integration tests."""
from __future__ import annotations


def demo_xml(name: str, memory: int = 16, uuid: str = "") -> str:
    uuid_el = f"<uuid>{uuid}</uuid>" if uuid else ""
    return (f"<domain type='kvm'><name>{name}</name>{uuid_el}"
            f"<memory unit='MiB'>{memory}</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>"
            "<devices><serial type='pty'><log file='/var/log/x.log'/></serial></devices>"
            "</domain>")
