"""The packaged embedded models: Qwen2.5-Coder-1.5B joined from its 22 parts in numeric order and
hash-checked, clear errors for a missing or altered file, and SmolLM2 found in its wheel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewatch.models.base import ModelError
from rewatch.models.packaged import (
    MODELS,
    QWEN_PARTS,
    _part_paths,
    gguf_metadata,
    joined_path,
    model_file,
    setup_model,
)


def test_parts_are_joined_in_numeric_order_not_glob_order():
    paths = _part_paths(MODELS["qwen2.5-coder-1.5b"])
    assert len(paths) == len(QWEN_PARTS) == 22
    numbers = [int(p.stem.removeprefix("part")) for p in paths]
    assert numbers == list(range(1, 23))  # a glob would give 1, 10, 11, ..., 2, 20, ...
    assert sorted(str(p) for p in paths) != [str(p) for p in paths]


def test_the_set_up_file_is_qwen_by_its_metadata():
    path = model_file("qwen2.5-coder-1.5b")
    stamp = json.loads(path.with_suffix(path.suffix + ".verified.json").read_text())
    assert stamp["sha256"] == MODELS["qwen2.5-coder-1.5b"].sha256
    meta = gguf_metadata(path)
    assert meta["general.name"] == "Qwen2.5 Coder 1.5B Instruct GGUF"
    assert meta["qwen2.context_length"] == "32768" and meta["general.file_type"] == "15"
    assert "<|im_start|>" in meta["tokenizer.chat_template"]  # Qwen's ChatML template


def test_missing_or_altered_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelError, match="make setup"):
        model_file("qwen2.5-coder-1.5b", cache_dir=tmp_path)
    # a file with a stamp whose size no longer matches (truncated, replaced) is refused
    dest = joined_path(MODELS["qwen2.5-coder-1.5b"], tmp_path)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"GGUF" + b"\0" * 64)
    dest.with_suffix(dest.suffix + ".verified.json").write_text(json.dumps(
        {"sha256": "x", "size": 1, "mtime_ns": 1}))
    with pytest.raises(ModelError, match="not verified"):
        model_file("qwen2.5-coder-1.5b", cache_dir=tmp_path)
    with pytest.raises(ModelError, match="no packaged model 'nope'"):
        model_file("nope")


@pytest.mark.slow
def test_setup_joins_and_checks_the_hash_from_scratch(tmp_path: Path):
    path = setup_model("qwen2.5-coder-1.5b", cache_dir=tmp_path)
    assert path.stat().st_size == 1117320768
    assert model_file("qwen2.5-coder-1.5b", cache_dir=tmp_path) == path


def test_smollm2_ships_in_its_wheel():
    assert model_file("smollm2-135m").name == "SmolLM2-135M-Instruct.Q4_1.gguf"
