"""The config tree: YAML files, dotted overrides, errors that name the key."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from rewatch.cli import app
from rewatch.config import ConfigError, load_config
from rewatch.store import RunDir


def test_shipped_configs_load():
    demo = load_config("demo")
    assert demo.models["llm"].backend == "embedded"
    assert demo.models["llm"].model == "qwen2.5-coder-1.5b"
    assert demo.models["captioner"].backend == "objects"
    # the probe panel holds two different models
    assert {demo.models[p].model for p in demo.synth.qa.probes} == {"qwen2.5-coder-1.5b",
                                                                    "smollm2-135m"}
    real = load_config("vllm")
    assert real.models["llm"].backend == "openai"
    assert real.models["llm"].base_url.startswith("http://127.0.0.1")


def test_dotted_overrides_are_typed():
    cfg = load_config("demo", ["synth.qa.theta_text=0.3", "synth.qa.probes=[llm, llm]",
                               "models.llm.max_tokens=99", "eval.mode=direct"])
    assert cfg.synth.qa.theta_text == 0.3
    assert cfg.synth.qa.probes == ["llm", "llm"]
    assert cfg.models["llm"].max_tokens == 99
    assert cfg.eval.mode == "direct"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("synth.qa.theta_txt=0.3", "synth.qa.theta_txt: unknown key"),
        ("synth.qa.theta_text=1.5", "synth.qa.theta_text"),
        ("eval.mode=sideways", "eval.mode"),
        ("models.llm.concurrency=zero", "models.llm.concurrency"),
        ("synth.qa.generator=nonexistent", "synth.qa.generator: names model 'nonexistent'"),
        ("models.x.backend=openai", "base_url"),
    ],
)
def test_bad_keys_and_values_name_the_key(override, named):
    with pytest.raises(ConfigError) as e:
        load_config("demo", [override])
    assert named in str(e.value)


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["synth.qa.theta_text"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_is_written_into_the_run(tmp_path):
    cfg = load_config("demo", ["synth.qa.theta_sum=0.25"])
    RunDir(tmp_path / "run", cfg)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["synth"]["qa"]["theta_sum"] == 0.25
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_cli_config_show_and_error_exit_code():
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "show", "--config", "vllm", "--set",
                             "synth.qa.theta_text=0.3"])
    assert ok.exit_code == 0, ok.output
    assert yaml.safe_load(ok.stdout)["synth"]["qa"]["theta_text"] == 0.3
    bad = runner.invoke(app, ["config", "show", "--set", "reward.w_obss=2"])
    assert bad.exit_code == 2
    assert "reward.w_obss" in bad.output


def test_api_key_is_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-should-not-appear")
    cfg = load_config("vllm")
    RunDir(tmp_path / "run", cfg)
    assert "sk-secret" not in (tmp_path / "run" / "config.yaml").read_text()
