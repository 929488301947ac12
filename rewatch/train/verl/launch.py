"""`rewatch train verl RUN --out DIR`: a verl GRPO run of a VLM on the run's parquet export, with
the O&R reward as verl's custom reward function.

TRL's GRPO has no video support yet (TRL issue #4144), so GRPO of Qwen2.5-VL-7B goes through
verl. DIR gets `data/{train,val}.parquet` (the export, each video a qwen-vl-utils dict: fps 2,
at most `video.max_frames` frames of at most 128·28·28 pixels), `reward.yaml` (the resolved
rewatch config: the judge and M_infer endpoints the reward calls), `verl_grpo.yaml` (the
overrides as a tree, for reading), `overrides.txt` and `launch.sh` (what runs:
`python -m verl.trainer.main_ppo <overrides>`). The paper's rollout settings are the defaults:
n = 8, temperature 0.8, top_p 0.9. verl's async reward loop awaits `compute_score_async`, which
scores on the reward's own loop thread.

`--dry-run` validates without a GPU: our own checks of the data and the reward (always), and,
in a Python that has verl (this one, or `--verl-python`, e.g. `.venv-verl/bin/python` from
`make verl-env`), verl's own: its Hydra config schema with our overrides, its
`validate_config`, its `get_custom_reward_fn` calling our reward on a row of the parquet, and
its dataset's placeholder expansion of that row (`rewatch/train/verl/check.py`).
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rewatch.config import Config, dump_config

REWARD_FUNCTION = "compute_score_async"


class VerlError(ValueError):
    """The verl config or data does not validate; the message says what is wrong."""


@dataclass
class VerlPlan:
    """What `rewatch train verl` wrote, and what validated it."""

    out: Path
    overrides: list[str]
    config_path: Path
    command_path: Path
    python: str
    report: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)


def reward_file() -> Path:
    """The file verl imports the reward from (`custom_reward_function.path`)."""
    from rewatch.train.verl import reward

    return Path(reward.__file__).resolve()


def _b(x: bool) -> str:
    return "True" if x else "False"


def verl_overrides(cfg: Config, data_dir: Path, out: Path, reward_config: Path) -> list[str]:
    """verl 0.9 command-line overrides for GRPO with our data, reward and the paper's settings."""
    v = cfg.train.verl
    val = data_dir / "val.parquet"
    kl = v.kl_coef > 0
    o = [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={val if val.exists() else data_dir / 'train.parquet'}",
        "data.prompt_key=prompt",
        "data.video_key=videos",
        f"data.train_batch_size={v.train_batch_size}",
        f"data.max_prompt_length={v.max_prompt_length}",
        f"data.max_response_length={v.max_response_length}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"actor_rollout_ref.model.path={v.model}",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        f"actor_rollout_ref.actor.optim.lr={v.learning_rate}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={v.ppo_mini_batch_size}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        f"actor_rollout_ref.actor.use_kl_loss={_b(kl)}",
        f"actor_rollout_ref.actor.kl_loss_coef={v.kl_coef}",
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.n={v.n}",
        f"actor_rollout_ref.rollout.temperature={v.temperature}",
        f"actor_rollout_ref.rollout.top_p={v.top_p}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={v.tensor_parallel_size}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={v.gpu_memory_utilization}",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
        f"reward.reward_manager.name={v.reward_manager}",
        f"reward.custom_reward_function.path={reward_file()}",
        f"reward.custom_reward_function.name={REWARD_FUNCTION}",
        f"+reward.custom_reward_function.reward_kwargs.config={reward_config}",
        "+reward.custom_reward_function.reward_kwargs.judge=config",
        f"trainer.nnodes={v.nnodes}",
        f"trainer.n_gpus_per_node={v.gpus_per_node}",
        f"trainer.total_epochs={v.epochs}",
        f"trainer.project_name={v.project}",
        f"trainer.experiment_name={v.experiment}",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={out / 'checkpoints'}",
    ]
    if kl:
        o.append("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1")
    return o + list(v.extra)


def overrides_tree(overrides: list[str]) -> dict[str, Any]:
    """The dotted overrides as a nested mapping (for people reading verl_grpo.yaml)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, _, value = item.lstrip("+").partition("=")
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value) if value else value
    return tree


# --- our own checks (no verl needed) ----------------------------------------------------------

def _load_reward_by_path(path: Path, name: str) -> Any:
    """Import the reward file the way verl does (by file path, not by package)."""
    spec = importlib.util.spec_from_file_location("rewatch_custom_reward", path)
    if spec is None or spec.loader is None:
        raise VerlError(f"cannot import the reward file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def wrong_answer(row: dict[str, Any]) -> str:
    """A well-formed response with a wrong answer: the reward answers it without a judge call
    (r_acc = 0 short circuit), so checks need no judge server."""
    gt = str(row["reward_model"]["ground_truth"])
    options = (row.get("extra_info") or {}).get("options") or {}
    letters = [k for k, v in options.items() if v is not None and k != gt]
    answer = letters[0] if letters else str(int(gt) + 1) if gt.lstrip("-").isdigit() else "none"
    return ("I re-watch the start. <action>segment_query(\"00:00\")</action>"
            f"<observation>nothing moves</observation> So the answer is this. "
            f"<answer>{answer}</answer>")


def check_data(data_dir: Path, cfg: Config, reward_config: Path) -> dict[str, Any]:
    """The parquet files' columns and shapes, the videos on disk, and the reward called on a
    row exactly as verl will call it."""
    import pyarrow.parquet as pq

    out: dict[str, Any] = {}
    first: dict[str, Any] = {}
    need = {"data_source", "prompt", "videos", "ability", "reward_model", "extra_info"}
    for split in ("train", "val"):
        path = data_dir / f"{split}.parquet"
        if not path.exists():
            if split == "train":
                raise VerlError(f"{path} is missing: the run has no RL samples on the training "
                                "side")
            continue
        table = pq.read_table(path)
        missing = need - set(table.column_names)
        if missing:
            raise VerlError(f"{path}: missing columns {sorted(missing)}")
        rows = table.to_pylist()
        if not rows:
            raise VerlError(f"{path} has no rows")
        for i, r in enumerate(rows):
            text = "".join(m["content"] for m in r["prompt"])
            if text.count("<video>") != len(r["videos"] or []):
                raise VerlError(f"{path} row {i}: {text.count('<video>')} <video> placeholders "
                                f"for {len(r['videos'] or [])} videos")
            for vid in r["videos"]:
                p = Path(vid["video"].removeprefix("file://"))
                if not p.exists():
                    raise VerlError(f"{path} row {i}: video {p} not found")
            if not str(r["reward_model"]["ground_truth"] or "").strip():
                raise VerlError(f"{path} row {i}: empty reward_model.ground_truth")
        out[split] = {"rows": len(rows),
                      "with_caption": sum(bool(r["extra_info"].get("caption")) for r in rows)}
        if split == "train":
            first = rows[0]
    fn = _load_reward_by_path(reward_file(), "compute_score")
    result = fn(first["data_source"], wrong_answer(first), first["reward_model"]["ground_truth"],
                first["extra_info"], config=str(reward_config), judge="config")
    for key in ("score", "acc", "obs", "rea", "fmt", "no_caption"):
        if key not in result:
            raise VerlError(f"the reward returned no {key!r}: {result}")
    out["reward_on_a_wrong_answer"] = result
    v = cfg.video
    out["video"] = {k: first["videos"][0][k] for k in ("fps", "max_frames", "max_pixels")}
    if (v.fps, v.max_pixels) != (2.0, 128 * 28 * 28):
        out["note"] = "video settings differ from the paper's (fps 2, 128*28*28 pixels)"
    return out


def has_verl(python: str) -> bool:
    """Whether `python` can import verl."""
    if python == sys.executable:
        return importlib.util.find_spec("verl") is not None
    r = subprocess.run([python, "-c", "import verl"], capture_output=True, timeout=300)
    return r.returncode == 0


def prepare(run_dir: str | Path, out: str | Path, cfg: Config, *,
            verl_python: str | None = None) -> VerlPlan:
    """Export the data, write the config and launch script, and validate them."""
    from rewatch.data.export import build_data, write_verl

    out = Path(out).resolve()
    data_dir = out / "data"
    data = build_data(run_dir, cfg)
    counts = write_verl(data, data_dir, cfg)
    reward_config = out / "reward.yaml"
    reward_config.write_text(dump_config(cfg))
    overrides = verl_overrides(cfg, data_dir, out, reward_config)
    config_path = out / "verl_grpo.yaml"
    config_path.write_text("# verl overrides written by `rewatch train verl` (the command line "
                           "in launch.sh is what runs)\n"
                           + yaml.safe_dump(overrides_tree(overrides), sort_keys=False))
    (out / "overrides.txt").write_text("\n".join(overrides) + "\n")
    python = verl_python or sys.executable
    command = out / "launch.sh"
    command.write_text("#!/bin/sh\n# GRPO with the O&R reward on a Ray cluster (start Ray first:"
                       " `ray start --head` here, `ray start --address=HEAD:6379` on the others)"
                       f"\nexec {shlex.quote(python)} -m verl.trainer.main_ppo \\\n  "
                       + " \\\n  ".join(shlex.quote(o) for o in overrides) + ' "$@"\n')
    command.chmod(0o755)
    plan = VerlPlan(out, overrides, config_path, command, python)
    plan.checks["data"] = check_data(data_dir, cfg, reward_config)
    plan.report.append(f"data: {counts.get('train', 0)} train / {counts.get('val', 0)} val rows "
                       f"({plan.checks['data']['train']['with_caption']} train rows with C_detail)")
    plan.report.append(f"reward on a wrong answer (no judge call): "
                       f"{plan.checks['data']['reward_on_a_wrong_answer']}")
    if has_verl(python):
        r = subprocess.run([python, "-m", "rewatch.train.verl.check", str(out)],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise VerlError(f"verl's own validation failed:\n{(r.stderr or r.stdout)[-3000:]}")
        plan.checks["verl"] = json.loads(r.stdout.strip().splitlines()[-1])
        plan.report.append(f"verl {plan.checks['verl']['verl_version']}: config schema, "
                           "validate_config, get_custom_reward_fn and the dataset's placeholder "
                           "expansion accept it")
    else:
        plan.report.append(f"verl is not importable by {python}: checked our data and reward "
                           "only (make verl-env, then --verl-python .venv-verl/bin/python)")
    (out / "dry_run.json").write_text(json.dumps(plan.checks, indent=1, default=str))
    return plan


def launch(plan: VerlPlan) -> int:
    """Run verl's trainer (needs GPUs and a Ray cluster); returns its exit status."""
    return subprocess.call([str(plan.command_path)])
