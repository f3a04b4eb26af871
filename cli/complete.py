"""Shell completion of what the cluster holds (VM names, node names, operation ids, networks),
asked of ZooKeeper while the shell completes. A cluster that does not answer completes
nothing: completion never prints an error into the operator's command line."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from pvc.core.cluster import Cluster

CONNECT_TIMEOUT = 2.0   # seconds: a shell waits on this


def _connect(ctx: click.Context) -> "Cluster":
    from dataclasses import replace

    from pvc.core import config as configmod
    from pvc.core.cluster import Cluster
    cfg = configmod.load(
        configmod.locate(ctx.find_root().params.get("config_path"), sandbox=True))
    zk = cfg.cluster.zookeeper
    quick = replace(cfg, cluster=replace(cfg.cluster, zookeeper=replace(
        zk, timeout=min(zk.timeout, CONNECT_TIMEOUT))))
    return Cluster.connect(quick)


def _items(pairs: Callable[["Cluster"], list[tuple[str, str]]]) -> Any:
    """A click shell_complete function offering pairs(cluster): (value, help)."""
    def complete(ctx: click.Context, _param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
        try:
            c = _connect(ctx)
        except Exception:   # no config, no cluster: nothing to offer
            return []
        try:
            return [CompletionItem(value, help=help_text) for value, help_text in pairs(c)
                    if value.startswith(incomplete)]
        except Exception:
            return []
        finally:
            c.close()
    return complete


vms = _items(lambda c: sorted((v.name, v.state) for v in c.vms()))
nodes = _items(lambda c: sorted((n.name, f"{n.daemon_state}, {n.domain_state}")
                                for n in c.nodes()))
operations = _items(lambda c: [(o.id, f"{o.kind} {o.target}: {o.state}")
                               for o in c.operations(limit=200)])


def _networks(c: "Cluster") -> list[tuple[str, str]]:
    from pvc.network import managed
    return [(str(n.vni), n.domain) for n in managed.all_networks(c)]


networks = _items(_networks)

vm_argument = click.argument("ref", metavar="VM", shell_complete=vms)


def node_argument(name: str = "node_name") -> Any:
    return click.argument(name, metavar="NODE", shell_complete=nodes)


operation_argument = click.argument("op_id", metavar="ID", shell_complete=operations)


def script(shell: str, program: click.Command) -> str:
    """The completion script a shell sources (click's, for the `pvc` program)."""
    from click.shell_completion import get_completion_class
    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"no completion for {shell!r}")
    return cls(program, {}, "pvc", "_PVC_COMPLETE").source()
