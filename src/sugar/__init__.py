"""sugar: one multimodal LLM that both generates and embeds, trained with the Sugar method.

The package is organised one concept per file (see CONTRIBUTING.md):

- :mod:`sugar.config` -- the typed configuration tree, strict YAML and ``key=value`` overrides;
- :mod:`sugar.io` -- atomic writes, checksums and run manifests; every artefact goes through it;
- :mod:`sugar.align` -- batched, masked, differentiable DTW, soft-DTW and Global Alignment Kernels;
- :mod:`sugar.eval.metrics` -- pure metric functions;
- :mod:`sugar.data` -- interleaved samples, converters, the built-in world, span-exact batching;
- :mod:`sugar.models` -- the backbone interface, the built-in small MLLM, bundles;
- :mod:`sugar.embed` -- unit vectors of samples, texts, images and every prefix in one pass;
- :mod:`sugar.index` -- persistent exact and FAISS vector indexes bound to a model identity;
- :mod:`sugar.rag` -- retrieval-augmented generation: retrieve payloads, prompt, generate;
- :mod:`sugar.mine` -- hard-negative mining with a trained model;
- :mod:`sugar.api` -- ``sugar.load(dir)``, a bundle as one object (generate, score, embed,
  search, ask);
- :mod:`sugar.cli` -- the ``sugar`` console script.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__", "load"]


def __getattr__(name: str) -> object:
    # ``sugar.load`` without importing torch for every ``import sugar`` (the CLI starts fast).
    if name == "load":
        from sugar.api import load

        return load
    raise AttributeError(f"module 'sugar' has no attribute {name!r}")
