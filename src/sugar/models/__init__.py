"""Models: the tokenizer, the multimodal LLM and the pieces that feed it."""
