"""Recipes: programs over the library that the CLI calls (not library code).

- :mod:`sugar.recipes.demo` -- ``sugar demo``: world -> teacher -> base -> fine-tunes -> report;
- :mod:`sugar.recipes.bench` -- ``sugar bench quality``: the multi-seed variant comparison.
"""
