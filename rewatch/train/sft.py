"""`rewatch train sft RUN --out DIR`: the paper's multi-task SFT (L_Cap + L_QA + L_CoT) with TRL's
SFTTrainer, on the CPU student in text-proxy mode (C_detail stands in for the video).

Each sample is a prompt/completion pair, so the loss covers the assistant's text only. The three
tasks are trained together in one shuffled stream, as the paper does; the loss of each task is
logged on its own (`loss_caption`, `loss_direct`, `loss_think`: mean token NLL over the logging
window), beside TRL's overall `loss`. DIR gets `checkpoint-N/` folders (resume with `--resume`),
the final `model/` (transformers), `model.gguf` (llama.cpp, for `rewatch eval run`), `log.jsonl`
and `summary.json` (steps, tokens/s, peak memory).
"""

from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewatch.config import Config
from rewatch.data.export import TrainingData, build_data, trl_text_record
from rewatch.data.samples import TASKS, DataError, count_tasks
from rewatch.train.student import (
    CheckpointError,
    check_same_model,
    export_gguf,
    resolve_base,
    save_trained,
    write_meta,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training command did (also written to DIR/summary.json)."""

    out: Path
    model: Path
    gguf: Path | None
    summary: dict[str, Any]


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def last_checkpoint(out: Path) -> Path | None:
    """The newest `checkpoint-N` folder of a training output, if any."""
    ckpts = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()]
    return max(ckpts, key=lambda p: int(p.name[11:])) if ckpts else None


def prepare_out(out: Path, resume: bool, base: Path) -> Path | None:
    """Check the output folder: a used folder needs `--resume`, and a resumed checkpoint must be
    of the base model. Returns the checkpoint to resume from."""
    ckpt = last_checkpoint(out) if out.exists() else None
    if out.exists() and any(out.iterdir()) and not resume:
        what = ckpt.name if ckpt else "files"
        raise CheckpointError(f"{out} already holds a training run ({what}); pass --resume to "
                              "continue it, or choose another --out")
    if resume and ckpt is not None:
        check_same_model(ckpt, base)
    if resume and ckpt is None and out.exists() and (out / "model").exists():
        raise CheckpointError(f"{out} holds a finished model and no checkpoint to resume; "
                              "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return ckpt


def text_dataset(data: TrainingData, cfg: Config, split: str = "train") -> Any:
    """The text-proxy SFT set as a `datasets.Dataset` (prompt, completion, task, task_id)."""
    from datasets import Dataset

    samples = data.sft_train if split == "train" else data.sft_val
    rows = []
    for s in samples:
        if s.caption is None:
            continue
        r = trl_text_record(s, cfg)
        r["task_id"] = TASKS.index(s.task)  # type: ignore[arg-type]
        rows.append(r)
    if not rows:
        raise DataError(f"no text-proxy SFT samples on the {split} side (every sample needs its "
                        "video's C_detail)")
    return Dataset.from_list(rows)


def _trainer_class() -> Any:
    """TRL's SFTTrainer with the loss of each task logged (defined lazily: TRL is heavy)."""
    import torch
    from trl import SFTTrainer

    class TaskLossSFTTrainer(SFTTrainer):
        """SFTTrainer that also logs `loss_<task>`: the forward hook reads the per-token log
        probabilities TRL's fused head already computes, so it costs no extra pass."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._task_nll = torch.zeros(len(TASKS), dtype=torch.float64)
            self._task_tokens = torch.zeros(len(TASKS), dtype=torch.float64)
            self._batch_tasks: torch.Tensor | None = None
            assert self.model is not None
            self.model.register_forward_hook(self._record)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and "task_id" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "task_id"]

        def _record(self, module: Any, args: Any, output: Any) -> None:
            tasks = self._batch_tasks
            lp = getattr(output, "log_probs", None)
            mask = getattr(output, "label_mask", None)
            if tasks is None or lp is None or mask is None or not module.training:
                return
            with torch.no_grad():
                nll = (-lp.detach().double() * mask).sum(dim=-1)
                n = mask.double().sum(dim=-1)
                for t, a, b in zip(tasks.tolist(), nll.tolist(), n.tolist(), strict=True):
                    self._task_nll[t] += a
                    self._task_tokens[t] += b

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            self._batch_tasks = inputs.pop("task_id", None)
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                self._batch_tasks = None

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self.model is not None and self.model.training:
                for i, task in enumerate(TASKS):
                    if self._task_tokens[i] > 0:
                        logs[f"loss_{task}"] = round(
                            float(self._task_nll[i] / self._task_tokens[i]), 4)
                self._task_nll.zero_()
                self._task_tokens.zero_()
            super().log(logs, start_time)

    return TaskLossSFTTrainer


class _TaskCollator:
    """TRL's language-modelling collator, passing each example's task id along."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        tasks = [int(e.pop("task_id")) for e in examples]
        batch = self.inner(examples)
        batch["task_id"] = torch.tensor(tasks)
        return batch


def train_sft(run_dir: str | Path, out: str | Path, cfg: Config, *, resume: bool = False,
              max_steps: int | None = None, gguf: bool = True,
              data: TrainingData | None = None) -> TrainResult:
    """Train the student on a run's SFT mix; see the module docstring for what DIR holds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    out = Path(out)
    base = resolve_base(cfg.train.base_model)
    ckpt = prepare_out(out, resume, base)
    data = data or build_data(run_dir, cfg)
    train_set = text_dataset(data, cfg)
    s = cfg.train.sft
    torch.manual_seed(s.seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(out), use_cpu=True, per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum, learning_rate=s.learning_rate,
        num_train_epochs=s.epochs, max_steps=max_steps or s.max_steps,
        max_length=s.max_length, packing=s.packing, logging_steps=s.logging_steps,
        save_steps=s.save_steps, save_total_limit=s.save_total_limit,
        warmup_steps=s.warmup_steps, seed=s.seed, report_to=[], dataloader_num_workers=0,
        completion_only_loss=True, bf16=False, fp16=False, disable_tqdm=True,
    )
    collator = None
    if s.packing:  # packed rows mix tasks, and TRL's padding-free path takes no collator
        log.info("packing: the loss of each task is not logged (packed rows mix tasks)")
    else:
        collator = _TaskCollator(DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id))
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_set,
                               processing_class=tok, data_collator=collator)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    wall = time.perf_counter() - t0
    final, history = save_trained(trainer, tok, out)
    tokens = trainer._total_train_tokens
    summary = {
        "stage": "sft", "run": str(run_dir), "base_model": cfg.train.base_model,
        "steps": trainer.state.global_step, "resumed_from": str(ckpt) if ckpt else None,
        "samples": count_tasks(data.sft_train), "mix": cfg.data.sft_mix.model_dump(),
        "train_seconds": round(wall, 2), "tokens": int(tokens),
        "tokens_per_second": round(tokens / wall, 1) if wall else None,
        "peak_rss_mb": round(peak_rss_mb(), 1), "max_length": s.max_length,
        "first_loss": next((r["loss"] for r in history if "loss" in r), None),
        "last_loss": next((r["loss"] for r in reversed(history) if "loss" in r), None),
        "train_loss": result.training_loss,
    }
    write_meta(final, base_model=cfg.train.base_model, **{k: summary[k] for k in (
        "stage", "run", "steps", "mix")})
    gguf_path = export_gguf(final, out / "model.gguf") if gguf else None
    summary["gguf"] = str(gguf_path) if gguf_path else None
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log.info("SFT done: %d steps, loss %.3f -> %.3f, %.0f tokens/s, peak %.0f MiB",
             summary["steps"], summary["first_loss"] or 0, summary["last_loss"] or 0,
             summary["tokens_per_second"] or 0, summary["peak_rss_mb"])
    return TrainResult(out, final, gguf_path, summary)
