"""One chat interface to every model: embedded (llama.cpp, tagger) or any OpenAI server."""

from rewatch.models.base import ChatModel, ModelError, Reply, SchemaError, Usage
from rewatch.models.registry import Models, build_model, build_models

__all__ = [
    "ChatModel", "ModelError", "Models", "Reply", "SchemaError", "Usage", "build_model",
    "build_models",
]
