"""One chat interface to every model: embedded (llama.cpp, tagger) or any OpenAI-compatible server."""

from rewatch.models.base import ChatModel, ModelError, Reply, SchemaError, Usage
from rewatch.models.registry import build_model, build_models

__all__ = ["ChatModel", "ModelError", "Reply", "SchemaError", "Usage", "build_model", "build_models"]
