"""Configuration sources and their precedence: code > FileConfig > dict > YAML > env > defaults."""

from __future__ import annotations

import pytest

from omniq.backend.file import FileBackend
from omniq.exceptions import ConfigError
from omniq.models.config import FileConfig


def test_defaults():
    c = FileConfig()
    assert (c.base_dir, c.serialization_format, c.tasks_dir) == ("./omniq_data", "json", "tasks")
    assert c.visibility_timeout == 60.0 and c.fsync is False and c.secret_key is None


def test_env_fills_unset_fields(monkeypatch):
    monkeypatch.setenv("OMNIQ_BASE_DIR", "./my_omniq_data")
    monkeypatch.setenv("OMNIQ_VISIBILITY_TIMEOUT", "15")
    monkeypatch.setenv("OMNIQ_FSYNC", "true")
    monkeypatch.setenv("OMNIQ_STORAGE_OPTIONS", '{"anon": true}')
    c = FileConfig()
    assert c.base_dir == "./my_omniq_data" and c.visibility_timeout == 15.0 and c.fsync is True
    assert c.storage_options == {"anon": True}
    assert FileConfig(base_dir="./explicit").base_dir == "./explicit"


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("OMNIQ_VISIBILITY_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="OMNIQ_VISIBILITY_TIMEOUT"):
        FileConfig()


def test_dict_and_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNIQ_RESULTS_DIR", "env_results")
    path = tmp_path / "omniq.yaml"
    path.write_text("omniq:\n  base_dir: ./from_yaml\n  serialization_format: msgpack\n")
    c = FileConfig.from_yaml(path)
    assert (c.base_dir, c.serialization_format, c.results_dir) == (
        "./from_yaml",
        "msgpack",
        "env_results",
    )
    c2 = FileConfig.from_yaml(path, base_dir="./from_dict")
    assert c2.base_dir == "./from_dict"
    assert FileConfig.from_dict({"poll_interval": "0.5"}).poll_interval == 0.5


@pytest.mark.parametrize(
    "data, match",
    [
        ({"serialization_format": "xml"}, "serialization_format"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"visibility_timeout": 0}, "visibility_timeout"),
        ({"tasks_dir": "../up"}, "tasks_dir"),
        ({"result_ttl": -5}, "result_ttl"),
        ({"poll_interval": "fast"}, "poll_interval"),
    ],
)
def test_invalid_values_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        FileConfig.from_dict(data)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        FileConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        FileConfig.from_yaml(tmp_path / "missing.yaml")


def test_backend_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNIQ_FSSPEC_URI", "memory://from-env")
    assert FileBackend().protocol == "memory"
    code = FileBackend(base_dir=str(tmp_path / "code"))
    assert code.protocol == "file" and code.root == str(tmp_path / "code")
    cfg = FileConfig(
        base_dir=str(tmp_path / "obj"), fsspec_uri=None, serialization_format="msgpack"
    )
    b = FileBackend.from_config(cfg, serialization_format="json")
    assert b.root == str(tmp_path / "obj") and b.config.serialization_format == "json"


def test_uri_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert FileBackend.from_url("file://./data").root == str(tmp_path / "data")
    assert FileBackend.from_url(str(tmp_path / "p")).root == str(tmp_path / "p")
    m = FileBackend.from_url("memory://omniq")
    assert (m.protocol, m.root, m.url) == ("memory", "/omniq", "memory://omniq")
    with pytest.raises(ConfigError, match="contradicts"):
        FileBackend(base_dir="memory://x", fs_protocol="file")
    with pytest.raises(ConfigError):
        FileBackend.from_url("")
    with pytest.raises(ConfigError, match="bucket"):
        FileBackend.from_url("memory://")


def test_none_given_in_code_keeps_forever(tmp_path, monkeypatch):
    """The ttls default to 7 days; ``None`` passed explicitly (code or env) means no ttl."""
    from omniq.backend.sqlite import SQLiteBackend
    from omniq.models.config import DEFAULT_TTL

    assert FileBackend(base_dir=str(tmp_path)).config.result_ttl == DEFAULT_TTL
    kept = FileBackend(base_dir=str(tmp_path), result_ttl=None, task_ttl=None)
    assert kept.config.result_ttl is None and kept.config.task_ttl is None
    assert kept.config.event_ttl == DEFAULT_TTL
    assert SQLiteBackend(tmp_path / "q.db", event_ttl=None).config.event_ttl is None
    monkeypatch.setenv("OMNIQ_EVENT_TTL", "3600")
    assert FileBackend(base_dir=str(tmp_path), event_ttl=None).config.event_ttl is None
    assert FileBackend(base_dir=str(tmp_path), fs_protocol="file").config.fs_protocol == "file"
