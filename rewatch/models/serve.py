"""`rewatch serve`: the embedded model behind llama.cpp's OpenAI-compatible server."""

from __future__ import annotations

from rewatch.models.local import smollm2_path


def serve_embedded(host: str = "127.0.0.1", port: int = 8000, n_ctx: int = 4096,
                   model_path: str | None = None, model_alias: str = "smollm2-135m") -> None:
    """Blocking: serve until interrupted. Requests name the model `model_alias`."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model = ModelSettings(model=str(model_path or smollm2_path()), model_alias=model_alias,
                          n_ctx=n_ctx, verbose=False)
    app = create_app(server_settings=ServerSettings(host=host, port=port),
                     model_settings=[model])
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        # free the server's model before interpreter shutdown (see local.close_all)
        from llama_cpp.server import app as server_app

        proxy = server_app._llama_proxy
        current = getattr(proxy, "_current_model", None)
        if current is not None:
            current.close()
