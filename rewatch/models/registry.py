"""Build ChatModels from the `models` table of the config."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rewatch.config import Config, ModelSpec
from rewatch.models.base import ChatModel
from rewatch.models.cache import ResponseCache


def build_model(spec: ModelSpec, cache: ResponseCache | None = None) -> ChatModel:
    """One ChatModel for one config entry; weights load lazily on the first call."""
    common: dict[str, Any] = dict(temperature=spec.temperature, max_tokens=spec.max_tokens,
                                  seed=spec.seed, schema_retries=spec.schema_retries,
                                  cache=cache)
    if spec.backend == "embedded":
        from rewatch.models.local import EmbeddedChatModel

        return EmbeddedChatModel(spec.model, model_path=spec.model_path, n_ctx=spec.n_ctx,
                                 n_threads=spec.n_threads, parallel=spec.concurrency,
                                 n_cells=spec.kv_cells,
                                 **common)
    if spec.backend == "openai":
        from rewatch.models.openai_compat import OpenAIChatModel

        assert spec.base_url is not None
        return OpenAIChatModel(spec.model, spec.base_url, api_key_env=spec.api_key_env,
                               concurrency=spec.concurrency, timeout_s=spec.timeout_s,
                               max_retries=spec.max_retries, structured=spec.structured,
                               replicas=spec.replicas, **common)
    if spec.backend == "objects":
        from rewatch.models.objects import ObjectCaptioner

        return ObjectCaptioner(spec.model, cache=cache)
    if spec.backend == "tagger":
        from rewatch.models.tagger import FrameTagger

        return FrameTagger(spec.model, cache=cache)
    raise ValueError(f"unknown backend {spec.backend!r}")


class Models:
    """The config's named models, built on first use (roles in stage configs name them)."""

    def __init__(self, cfg: Config, cache: ResponseCache | None = None):
        self.cfg = cfg
        self.cache = cache
        self._built: dict[str, ChatModel] = {}

    def __getitem__(self, name: str) -> ChatModel:
        if name not in self._built:
            if name not in self.cfg.models:
                raise KeyError(f"no model named {name!r} (config has {sorted(self.cfg.models)})")
            self._built[name] = build_model(self.cfg.models[name], self.cache)
        return self._built[name]

    def stats(self) -> dict[str, Counter[str]]:
        """Per-model counters: requests, calls, cache_hits, coalesced, schema_failures,
        schema_retries, transport_retries, structured_fallbacks, errors (docs/models.md)."""
        return {name: m.stats for name, m in self._built.items()}

    async def aclose(self) -> None:
        for m in self._built.values():
            close = getattr(m, "aclose", None)
            if close is not None:
                await close()


def build_models(cfg: Config, cache: ResponseCache | None = None) -> Models:
    return Models(cfg, cache)
