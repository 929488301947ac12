"""One chat interface to every model: embedded (llama.cpp, tagger) or any OpenAI-compatible server."""

from rewatch.models.base import ChatModel, ModelError, Reply, SchemaError, Usage
from rewatch.models.registry import Models, build_model, build_models

__all__ = ["ChatModel", "ModelError", "Reply", "SchemaError", "Usage", "Models", "build_model", "build_models"]
