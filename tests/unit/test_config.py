from __future__ import annotations

from pathlib import Path

import pytest

from pvc.core import config
from pvc.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_sample_config_is_valid(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "pw").chmod(0o600)
    text = (ROOT / "config" / "pvc.sample.yaml").read_text()
    path = tmp_path / "pvc.yaml"
    path.write_text(text.replace("/etc/pvc/redis.password", str(tmp_path / "pw")))
    cfg = config.load(path, environ={})
    assert cfg.node.name == "hv1"
    assert cfg.cluster.coordinators == ["hv1", "hv2", "hv3"]
    assert cfg.cluster.migration.per_target == 2
    assert cfg.redis_password() == "secret"


def test_every_error_is_reported_with_its_key_path() -> None:
    data = {
        "cluster": {"zookeeper": {"timeout": "soon", "hosts": 5}, "migration":
                    {"default_selector": "random", "max_parallel": 0}, "colour": "red"},
        "node": {"enable_hypervisor": "yes"},
    }
    with pytest.raises(ConfigError) as err:
        config.parse(data, "x.yaml", environ={})
    problems = err.value.problems
    assert "cluster.zookeeper.timeout: expected a number, got 'soon'" in problems
    assert "cluster.zookeeper.hosts: expected a string, got 5" in problems
    assert any(p.startswith("cluster.migration.default_selector: 'random' is not one of")
               for p in problems)
    assert "cluster.migration.max_parallel: 0 is below the minimum 1" in problems
    assert "cluster.colour: unknown key" in problems
    assert "node.enable_hypervisor: expected true or false, got 'yes'" in problems
    assert len(problems) == 6


def test_defaults_for_an_empty_file() -> None:
    cfg = config.parse(None, environ={})
    assert cfg.cluster.zookeeper.hosts == "127.0.0.1:2181"
    assert not cfg.is_node
    assert cfg.node.enable_hypervisor is True


def test_environment_overrides_the_file() -> None:
    env = {"PVC_NODE__NAME": "hv7", "PVC_NODE__ENABLE_HYPERVISOR": "false",
           "PVC_CLUSTER__ZOOKEEPER__TIMEOUT": "2.5", "PVC_CONFIG": "/ignored.yaml"}
    cfg = config.parse({"node": {"name": "hv1"}}, environ=env)
    assert cfg.node.name == "hv7"
    assert cfg.node.enable_hypervisor is False
    assert cfg.cluster.zookeeper.timeout == 2.5


def test_bad_environment_override_is_reported() -> None:
    with pytest.raises(ConfigError) as err:
        config.parse({}, environ={"PVC_NODE__KEEPALIVE_INTERVAL": "fast"})
    assert err.value.problems == ["node.keepalive_interval: expected a number, got 'fast'"]


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("cluster:\n  name: [unclosed\nnode: {}\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+"):
        config.load(path, environ={})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("/nonexistent/pvc.yaml", environ={})


def test_semantic_checks() -> None:
    with pytest.raises(ConfigError) as err:
        config.parse({"node": {"name": "bad name"}, "cluster": {"zookeeper": {"root": "pvc"}}},
                     environ={})
    assert ("cluster.zookeeper.root: must be an absolute path below '/' (e.g. /pvc)"
            in err.value.problems)
    assert any(p.startswith("node.name:") for p in err.value.problems)


def test_written_config_is_private_and_round_trips(tmp_path: Path) -> None:
    cfg = config.parse({"node": {"name": "hv2"}, "cluster": {"redis": {"password": "s3"}}},
                       environ={})
    path = tmp_path / "out.yaml"
    config.write(cfg, path)
    assert path.stat().st_mode & 0o777 == 0o600
    again = config.load(path, environ={})
    assert again.node.name == "hv2" and again.redis_password() == "s3"


def test_locate_order(tmp_path: Path) -> None:
    explicit = tmp_path / "a.yaml"
    env = {"PVC_CONFIG": str(tmp_path / "b.yaml"), "PVC_SANDBOX_DIR": str(tmp_path / "sb")}
    assert config.locate(str(explicit), env) == explicit
    assert config.locate(None, env) == tmp_path / "b.yaml"
    (tmp_path / "sb").mkdir()
    (tmp_path / "sb" / "client.yaml").write_text("{}")
    assert config.locate(None, {"PVC_SANDBOX_DIR": str(tmp_path / "sb")}, sandbox=True) == \
        tmp_path / "sb" / "client.yaml"


def test_a_daemon_never_takes_a_sandbox_configuration(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sb").mkdir()
    (tmp_path / "sb" / "client.yaml").write_text("{}")
    monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "etc-pvc.yaml")
    with pytest.raises(ConfigError, match="no pvc configuration") as err:
        config.locate(None, {"PVC_SANDBOX_DIR": str(tmp_path / "sb")})
    assert "sandbox" not in str(err.value)


def test_describe_lists_every_key() -> None:
    keys = {k for k, _help, _default in config.describe()}
    assert {"cluster.zookeeper.hosts", "node.enable_hypervisor", "node.enable_networking",
            "node.enable_storage"} <= keys


def test_console_log_lines_moved_to_cluster_and_the_old_key_still_works() -> None:
    cfg = config.parse({"node": {"name": "hv1", "console_log_lines": 42}}, environ={})
    assert cfg.cluster.console_log_lines == 42
    assert cfg.warnings == ("node.console_log_lines is deprecated: set "
                            "cluster.console_log_lines instead",)
    both = config.parse({"cluster": {"console_log_lines": 7},
                         "node": {"console_log_lines": 42}}, environ={})
    assert both.cluster.console_log_lines == 7            # the new place wins
    assert config.parse({"cluster": {"console_log_lines": 7}}, environ={}).warnings == ()


def write(tmp_path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "pvc.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty"),
    ("   \n# only a comment\n", "holds no settings"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe", "not a text file (it is not UTF-8)"),
    ("cluster:\n  name: a\ncluster:\n  name: b\n", "duplicate key 'cluster'"),
    ("cluster:\n  zookeeper:\n    timeout: .nan\n", "is not a finite number"),
    ("cluster:\n  zookeeper:\n    timeout: .inf\n", "is not a finite number"),
    ("cluster:\n  redis:\n    port: 70000\n", "above the maximum 65535"),
    ("cluster:\n  redis:\n    port: 0\n", "below the minimum 1"),
    ("cluster:\n  zookeeper:\n    hosts: ''\n", "hosts: empty"),
    ("cluster:\n  zookeeper:\n    hosts: 'zk1:99999'\n", "port must be 1-65535"),
])
def test_bad_files_are_one_clear_error(tmp_path: Path, text: str | bytes,
                                       expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text), environ={})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_an_inline_secret_in_a_readable_file_is_flagged(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster:\n  redis:\n    password: hunter2\n", mode=0o644)
    cfg = config.load(path, environ={})
    assert cfg.exposed_secrets
    assert "holds a secret (cluster.redis.password) and is readable by others" in \
        cfg.warnings[0]
    path.chmod(0o600)
    assert not config.load(path, environ={}).exposed_secrets


def test_secret_files_must_be_private_and_well_formed(tmp_path: Path) -> None:
    auth = tmp_path / "zk.auth"
    auth.write_text("no-colon-here\n")
    auth.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        config.parse({"cluster": {"zookeeper": {"auth_file": str(auth)}}}, environ={})
    assert any("readable by others" in p for p in err.value.problems)
    assert any("must hold user:password" in p for p in err.value.problems)
    auth.write_text("pvc:s3cret\n")
    auth.chmod(0o600)
    cfg = config.parse({"cluster": {"zookeeper": {"auth_file": str(auth)}}}, environ={})
    assert cfg.zookeeper_auth() == ("pvc", "s3cret")


def test_a_storage_node_needs_the_key_qemu_opens_disks_with() -> None:
    data = {"cluster": {"storage": {"enabled": True, "libvirt_secret_uuid": "not-a-uuid"}},
            "node": {"name": "hv1", "enable_storage": True}}
    with pytest.raises(ConfigError) as e:
        config.parse(data, environ={})
    assert e.value.problems == [
        "cluster.storage: a node with enable_storage needs libvirt_key_file and "
        "libvirt_secret_uuid (the key QEMU opens disks with)",
        "cluster.storage.libvirt_secret_uuid: 'not-a-uuid' is not a UUID"]


def test_metrics_need_a_private_token_and_an_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse({"cluster": {"metrics": {"enabled": True, "listen": "everywhere"}}},
                     environ={})
    assert e.value.problems == [
        "cluster.metrics: enabled needs token_file (a scrape must authenticate)",
        "cluster.metrics.listen: 'everywhere' is not an address"]
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(0o644)
    with pytest.raises(ConfigError) as e:
        config.parse({"cluster": {"metrics": {"enabled": True, "token_file": str(token)}}},
                     environ={})
    assert any("readable by others" in p for p in e.value.problems)
    assert any("needs listen or cluster.floating_ip" in p for p in e.value.problems)
    token.chmod(0o600)
    cfg = config.parse({"cluster": {"floating_ip": "10.0.0.250/24",
                                    "metrics": {"enabled": True, "token_file": str(token)}}},
                       environ={})
    assert (cfg.metrics_address(), cfg.metrics_token()) == ("10.0.0.250", "t0ken")
