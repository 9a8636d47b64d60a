"""sugar: one multimodal LLM that both generates and embeds, trained with the Sugar method.

The package is organised one concept per file (see CONTRIBUTING.md):

- :mod:`sugar.config` -- the typed configuration tree, strict YAML and ``key=value`` overrides;
- :mod:`sugar.io` -- atomic writes, checksums and run manifests; every artefact goes through it;
- :mod:`sugar.align` -- batched, masked, differentiable DTW, soft-DTW and Global Alignment Kernels;
- :mod:`sugar.eval.metrics` -- pure metric functions;
- :mod:`sugar.cli` -- the ``sugar`` console script.
"""

__version__ = "0.1.0.dev0"
