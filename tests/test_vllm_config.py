"""configs/vllm.yaml is the paper's setting and its prompts fit the 32k-token servers it names."""

from __future__ import annotations

from rewatch.config import CHARS_PER_TOKEN, load_config
from rewatch.synth.caption import SUMMARY_TOKENS
from rewatch.synth.qa_filters import caption_windows, load_prompt
from rewatch.synth.qa_free import window_budget
from rewatch.video.sampling import frame_size
from tests.test_qa_free import hour_caption


def test_vllm_config_is_free_generation_with_a_panel_of_different_models():
    cfg = load_config("vllm")
    qa = cfg.synth.qa
    assert qa.generation == "free" and qa.answer_hint == "off"
    panel = {cfg.models[p].model for p in qa.probes}
    assert len(panel) == len(qa.probes) >= 2 and qa.probe_prompts == 1  # one ask per model
    assert cfg.video.segmenter == "vlm" and cfg.models[cfg.video.segmenter_model].backend == (
        "openai")
    assert all(m.n_ctx == 32768 for m in cfg.models.values())


def test_vllm_config_budgets_fit_a_32k_server():
    cfg = load_config("vllm")
    cap = cfg.models[cfg.synth.caption.captioner]
    # one M_cap call: frames_per_call frames of a 16:9 video at qwen-vl-utils' size (one token
    # per 28x28 pixels), a label each, the prompt, and the reply
    h, w = frame_size(720, 1280, cfg.synth.caption.frames_per_call, cfg.video)
    image_tokens = cfg.synth.caption.frames_per_call * (h // 28) * (w // 28)
    prompt_tokens = len(load_prompt("caption.md")) / CHARS_PER_TOKEN + 8 * 64
    assert image_tokens + prompt_tokens + cap.max_tokens <= cap.n_ctx
    # M_seg: a 10-minute window at segmenter_fps
    seg_frames = round(cfg.video.chunk_s * cfg.video.segmenter_fps)
    assert seg_frames * (h // 28) * (w // 28) + cap.max_tokens <= cap.n_ctx
    # M_sum and free M_qa: budgets from n_ctx leave room; a 1-hour caption of ~90-character
    # lines every 4 s (a dense VLM caption, ~81k characters) is 7 windows of 10 minutes
    llm = cfg.models[cfg.synth.qa.generator]
    assert llm.prompt_chars(SUMMARY_TOKENS) > 60_000
    hour = hour_caption(minutes=61.0, every_s=4.0)
    for line in hour.detail:
        line.text += " The camera holds still while nothing else moves."
    budget = window_budget(llm, cfg.synth.qa, hour)
    assert 40_000 < budget < llm.n_ctx * CHARS_PER_TOKEN
    assert len(caption_windows(hour, budget, cfg.synth.qa.window_s)) == 7
    # the F1 judge's window around the evidence
    judge = cfg.models[cfg.synth.qa.judge]
    assert cfg.synth.qa.max_context_chars / CHARS_PER_TOKEN + judge.max_tokens < judge.n_ctx
