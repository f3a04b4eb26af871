"""`--watch`: redraw a list whenever the znodes it is drawn from change. ZooKeeper pushes each
change through a watch; nothing polls. Ctrl-C leaves (exit 0)."""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterable

import click

from pvc.core.cluster import Cluster
from pvc.core.timefmt import times_as_text

SETTLE = 0.1   # seconds to gather a burst of changes (a flush moves many VMs) into one redraw


class Watches:
    """Data and children watches on the znodes a view reads. A callback only records what
    happened; new children get their watches from the drawing thread (never a ZooKeeper call
    inside a callback)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.changed = threading.Event()
        self.new_children: "queue.Queue[tuple[str, list[str]]]" = queue.Queue()
        self.per_child: dict[str, Callable[[str], Iterable[str]]] = {}
        self.lists_per_child: dict[str, Callable[[str], Iterable[str]]] = {}
        self.watched: set[str] = set()

    def data(self, path: str) -> None:
        if path not in self.watched:
            self.watched.add(path)
            self.cluster.store.watch_raw(path, lambda _d, _v: self.changed.set())

    def count(self, path: str) -> None:
        """A change of path's children (how many workers a node has) redraws."""
        if path not in self.watched:
            self.watched.add(path)
            self.cluster.store.watch_children(path, lambda _kids: self.changed.set())

    def children(self, path: str, each: Callable[[str], Iterable[str]] = lambda _k: (),
                 lists: Callable[[str], Iterable[str]] = lambda _k: ()) -> None:
        """Watch path's children; for each child, the data paths each(child) names and the
        children of the paths lists(child) names."""
        self.per_child[path] = each
        self.lists_per_child[path] = lists

        def on_children(kids: list[str]) -> None:
            self.new_children.put((path, kids))
            self.changed.set()
        self.cluster.store.watch_children(path, on_children)

    def arm_new(self) -> None:
        while True:
            try:
                path, kids = self.new_children.get_nowait()
            except queue.Empty:
                return
            for kid in kids:
                for child_path in self.per_child[path](kid):
                    self.data(child_path)
                for list_path in self.lists_per_child[path](kid):
                    self.count(list_path)


def redraw_on_change(watches: Watches, render: Callable[[], Any], fmt: str) -> None:
    """Draw now and on every change: on a terminal the screen is redrawn; into a pipe each
    new view follows the last (text with a time line, JSON one document per line)."""
    last: Any = object()
    tty = sys.stdout.isatty()
    try:
        while True:
            watches.changed.wait()
            time.sleep(SETTLE)   # a burst of changes makes one redraw
            watches.changed.clear()
            watches.arm_new()
            view = render()
            if view == last:
                continue
            last = view
            if fmt == "json":
                click.echo(json.dumps(times_as_text(view), sort_keys=True, default=str))
                continue
            if tty:
                click.clear()
            click.echo(f"-- {time.strftime('%H:%M:%S')} (redrawn on change; Ctrl-C leaves)")
            click.echo(view)
    except KeyboardInterrupt:
        pass
