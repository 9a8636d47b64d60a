"""``sugar serve``: the bundle over HTTP (OpenAI-compatible embeddings and chat with retrieval,
search, index mutation, a web page). Needs the ``serve`` extra (FastAPI, uvicorn).

See :mod:`sugar.serve.app` for the endpoints, :mod:`sugar.serve.batching` for micro-batching
and :mod:`sugar.serve.inputs` for input shapes and limits.
"""
