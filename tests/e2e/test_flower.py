"""Flower tells the story, checked in a real headless browser (Debian's chromium, driven by
Playwright): an operator logs in, finds a running flush in the task list and opens it, and sees
its kind as the task name, names next to ids as its arguments, and its per-VM progress."""
from __future__ import annotations

import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from pvc.sandbox import sandbox as sb
from tests.e2e.conftest import Pvc, on_a_terminal, wait_until

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
# a browser on a closed network: no background connections, no sandbox as root
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def paused_libvirtd(pvc: Pvc, node: str) -> Iterator[None]:
    """The node's libvirtd stops answering (SIGSTOP): a migration to it waits."""
    layout = sb.Layout(Path(pvc.env["PVC_SANDBOX_DIR"]), int(pvc.offset))
    pid = int(layout.supervisor.info(f"libvirtd-{node}")["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def held_cluster(pvc: Pvc) -> Iterator[None]:
    """Maintenance (no fencing of a node whose libvirtd is paused), hv3 cordoned (the flush
    can only go to hv2); both undone afterwards."""
    pvc("cluster", "maintenance", "on", "--reason", "flower test")
    pvc("node", "cordon", "hv3")
    try:
        yield
    finally:
        pvc("node", "uncordon", "hv3")
        pvc("cluster", "maintenance", "off", "--yes")


def test_flower_shows_a_running_flush_with_names_and_progress(pvc: Pvc) -> None:
    st = pvc.status()
    url, password = st["flower"]["url"], Path(st["flower"]["password_file"]).read_text().strip()
    with held_cluster(pvc), browser() as b:
        stranger = b.new_context().request
        assert stranger.get(f"{url}/tasks").status == 401            # no credentials: no entry
        page = b.new_context(http_credentials={"username": sb.FLOWER_USER,
                                               "password": password}).new_page()
        op = ""
        try:
            with paused_libvirtd(pvc, "hv2"):
                op = pvc.json("node", "flush", "hv1")["id"]
                seen_in_flower(page, url, op)
                # an operation is unfinished: turning maintenance off asks first
                code, out = on_a_terminal(["cluster", "maintenance", "off"], answer="n")
                assert code == 130 and "operation(s) are not finished (node.flush hv1" in out
                assert pvc.json("cluster", "status")["maintenance"] is not None
        finally:
            if op:   # hv1 back as it was for the other tests
                pvc("task", "watch", op, timeout=300, ok=False)
                pvc("node", "unflush", "hv1", "--wait", timeout=300)
        link_line = next(line for line in pvc("task", "show", op).stdout.splitlines()
                         if line.strip().startswith("flower"))
        assert link_line.split()[-1] == f"{url}/task/{op}"
        assert pvc.json("task", "show", op)["state"] == "succeeded"
        assert pvc.json("task", "show", op)["flower_url"] == f"{url}/task/{op}"


def seen_in_flower(page: Any, url: str, op: str) -> None:
    """Find the running flush in Flower's task list, open it, and read its details."""
    page.goto(f"{url}/tasks")
    link = page.get_by_role("link", name=op)
    link.wait_for(timeout=30_000)
    link.click()
    page.wait_for_url(f"**/task/{op}")

    def details() -> str:
        page.reload()          # Flower's task page is drawn once; ask it again
        text = page.inner_text("body")
        return text if re.search(r"\b\d+/\d+ done: demo\d", text) else ""
    shown = wait_until("the flush's progress in Flower", details, 30)
    assert "pvc.node.flush" in shown and "PROGRESS" in shown
    assert f"node.flush hv1 (id hv1), operation {op}" in shown
    assert "requested by" in shown
