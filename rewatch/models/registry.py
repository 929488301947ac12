"""Build ChatModels from the `models` table of the config."""

from __future__ import annotations

from rewatch.config import Config, ModelSpec
from rewatch.models.base import ChatModel
from rewatch.models.cache import ResponseCache


def build_model(spec: ModelSpec, cache: ResponseCache | None = None) -> ChatModel:
    """One ChatModel for one config entry; models load lazily on their first call."""
    common = dict(temperature=spec.temperature, max_tokens=spec.max_tokens, seed=spec.seed,
                  schema_retries=spec.schema_retries, cache=cache)
    if spec.backend == "embedded":
        from rewatch.models.local import EmbeddedChatModel

        return EmbeddedChatModel(spec.model, model_path=spec.model_path, n_ctx=spec.n_ctx,
                                 n_threads=spec.n_threads, **common)
    if spec.backend == "openai":
        from rewatch.models.openai_compat import OpenAIChatModel

        assert spec.base_url is not None
        return OpenAIChatModel(spec.model, spec.base_url, api_key_env=spec.api_key_env,
                               concurrency=spec.concurrency, timeout_s=spec.timeout_s,
                               max_retries=spec.max_retries, structured=spec.structured, **common)
    if spec.backend == "tagger":
        from rewatch.models.tagger import FrameTagger

        return FrameTagger(spec.model, cache=cache)
    raise ValueError(f"unknown backend {spec.backend!r}")


def build_models(cfg: Config, cache: ResponseCache | None = None) -> dict[str, ChatModel]:
    """Every named model of the config (roles in stage configs refer to these names)."""
    return {name: build_model(spec, cache) for name, spec in cfg.models.items()}
