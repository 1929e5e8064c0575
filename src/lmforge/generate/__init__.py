"""Generation: pure sampling maths (``sampling.py``) and the decoding loop with its KV cache and a
text streamer for stop strings and split UTF-8 characters (``engine.py``)."""

from lmforge.generate.engine import TextStreamer, encode_prompt, generate_text, generate_tokens
from lmforge.generate.sampling import sample_next

__all__ = ["TextStreamer", "encode_prompt", "generate_text", "generate_tokens", "sample_next"]
