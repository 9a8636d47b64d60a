"""Interleaved image-text data: the sample schema, JSONL I/O, slices, converters, the world."""
