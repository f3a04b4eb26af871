"""Hostile and random input, without servers: every input is either accepted (and round-trips)
or refused with one line, and a refusal writes nothing.

Hypothesis generates domain XML, names, references and configuration documents; the cases the
issue names are spelled out first."""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvc.core import config, names
from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import InvalidInput, NotFound, PvcError
from pvc.core.schema import Schema
from pvc.vm import definition, domxml
from tests.fakes.store import MemoryBackend

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def xml(name: str = "web", memory: str = "512", unit: str = "MiB", vcpu: str = "1") -> str:
    return (f"<domain type='kvm'><name>{name}</name><memory unit='{unit}'>{memory}</memory>"
            f"<vcpu>{vcpu}</vcpu><os><type>hvm</type></os></domain>")


def one_line(err: BaseException) -> bool:
    return isinstance(err, PvcError) and str(err) != "" and "\n" not in str(err)


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster(MemoryBackend().session(), Schema("/pvc"), Config())
    c.ensure_schema()
    return c


def snapshot(c: Cluster) -> dict[str, Any]:
    return copy.deepcopy({p: (n.data, n.version) for p, n in c.store.backend.nodes.items()})


def refused(c: Cluster, action: Callable[[], Any]) -> str:
    """Run an action that must be refused: one line, nothing written."""
    before = snapshot(c)
    with pytest.raises(PvcError) as err:
        action()
    assert one_line(err.value), repr(err.value)
    assert snapshot(c) == before
    return str(err.value)


# ---------------------------------------------------------------- the named cases

def test_xml_that_is_not_utf8_is_one_line() -> None:
    with pytest.raises(InvalidInput, match="not UTF-8 text"):
        domxml.decode(xml().encode() + b"\xff\xfe")


@pytest.mark.parametrize("memory", ["nan", "inf", "-inf", "NaN", "1e400"])
def test_memory_that_is_not_a_finite_number_is_refused(cluster: Cluster, memory: str) -> None:
    assert "must be a positive number" in refused(
        cluster, lambda: definition.define(cluster, xml(memory=memory)))


def test_absurd_sizes_are_refused(cluster: Cluster) -> None:
    assert "more than any machine has" in refused(
        cluster, lambda: definition.define(cluster, xml(memory=str(10 ** 17))))
    assert "at most 4096" in refused(
        cluster, lambda: definition.define(cluster, xml(vcpu=str(10 ** 20))))


def test_a_huge_definition_names_the_size_limit(cluster: Cluster) -> None:
    big = xml().replace("<os>", "<description>" + "x" * 3_000_000 + "</description><os>")
    assert "domain XML is 2.9 MiB; the limit is 256 KiB" in refused(
        cluster, lambda: definition.define(cluster, big))


def test_entities_and_dtds_are_refused(cluster: Cluster) -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            '<domain><name>&b;</name><memory>1</memory></domain>')
    assert "entities and DTDs are not allowed" in refused(
        cluster, lambda: definition.define(cluster, bomb))


@pytest.mark.parametrize("ref", [".", "..", "../vms", "", "a/b", "-x", " web"])
def test_references_that_are_paths_are_refused(cluster: Cluster, ref: str) -> None:
    for lookup in (lambda: cluster.vm(ref), lambda: cluster.node(ref)):
        message = refused(cluster, lookup)
        assert "is not a valid" in message or "no VM" in message
    assert "not a valid operation id" in refused(cluster, lambda: cluster.operation(ref))


# ---------------------------------------------------------------- generated inputs

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
number_text = st.one_of(st.integers(-10 ** 20, 10 ** 20).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        text)
units = st.sampled_from(["KiB", "MiB", "GiB", "b", "bogus", "", "TiB"])
good_names = st.from_regex(names.NAME, fullmatch=True)
vm_names = st.one_of(good_names, text)
sizes = st.one_of(st.integers(1, 10 ** 7).map(str), number_text)



@FAST
@given(name=vm_names, memory=sizes, unit=units, vcpu=sizes)
def test_generated_definitions_are_accepted_whole_or_refused_cleanly(
        cluster: Cluster, name: str, memory: str, unit: str, vcpu: str) -> None:
    from xml.sax.saxutils import escape
    doc = xml(escape(name), escape(memory), escape(unit), escape(vcpu))
    before = snapshot(cluster)
    try:
        vm = definition.define(cluster, doc)
    except PvcError as e:
        assert one_line(e), repr(e)
        assert snapshot(cluster) == before
        return
    stored = cluster.vm(vm.name).value
    assert (stored.name, stored.uuid, stored.memory, stored.vcpus) == \
        (vm.name, vm.uuid, vm.memory, vm.vcpus)
    assert names.valid_name(vm.name) and 1 <= vm.memory and 1 <= vm.vcpus <= 4096
    again = domxml.parse(cluster.vm_xml(vm.uuid))[0]          # the stored XML round-trips
    assert (again.name, again.uuid, again.memory_mib) == (vm.name, vm.uuid, vm.memory)
    definition.undefine(cluster, vm.uuid)


@FAST
@given(name=good_names.filter(lambda n: len(n) not in (32, 36)),
       memory=st.integers(1, 10 ** 6), vcpu=st.integers(1, 4096))
def test_every_well_formed_definition_is_accepted(cluster: Cluster, name: str, memory: int,
                                                  vcpu: int) -> None:
    vm = definition.define(cluster, xml(name, str(memory), "MiB", str(vcpu)))
    assert (vm.name, vm.memory, vm.vcpus) == (name, memory, vcpu)
    definition.undefine(cluster, vm.uuid)


@FAST
@given(ref=vm_names)
def test_generated_references_find_nothing_or_are_refused(cluster: Cluster, ref: str) -> None:
    for lookup in (lambda: cluster.vm(ref), lambda: cluster.node(ref),
                   lambda: cluster.operation(ref)):
        before = snapshot(cluster)
        with pytest.raises((NotFound, InvalidInput)) as err:
            lookup()
        assert one_line(err.value)
        assert snapshot(cluster) == before


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                    st.floats(allow_nan=True, allow_infinity=True), text)
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["cluster", "node", "zookeeper", "redis", "name", "port",
                                     "hosts", "timeout", "coordinators", "migration",
                                     "max_parallel", "console_log_lines", "bogus"]),
                    inner, max_size=4)), max_leaves=12)


@FAST
@given(doc=documents)
def test_generated_configurations_validate_or_say_what_is_wrong(doc: Any) -> None:
    try:
        cfg = config.parse(doc, environ={})
    except config.ConfigError as e:
        assert one_line(e) and e.problems
        return
    again = config.parse(config.dump(cfg), environ={})          # accepted: it round-trips
    assert again == cfg
    for value in (cfg.cluster.zookeeper.timeout, cfg.cluster.zookeeper.session_timeout):
        assert math.isfinite(value)


@FAST
@given(doc=documents)
def test_generated_configuration_files_load_or_fail_in_one_line(tmp_path_factory: Any,
                                                                doc: Any) -> None:
    path = tmp_path_factory.mktemp("cfg") / "pvc.yaml"
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    try:
        config.load(path, environ={})
    except config.ConfigError as e:
        assert one_line(e)


def test_a_vm_undefined_during_a_request_is_named_not_its_znode(cluster: Cluster) -> None:
    from pvc.operations import records
    from pvc.operations.requests import commit_vm
    vm = definition.define(cluster, xml("racer"))
    version = cluster.vm("racer").version
    definition.undefine(cluster, "racer")
    op = records.new_operation("vm.start", vm.name, vm.uuid, "hv1")
    message = refused(cluster, lambda: commit_vm(cluster, vm, version, op, busy=True))
    assert message == "VM racer was undefined meanwhile; nothing was changed"
    assert "/pvc" not in message
