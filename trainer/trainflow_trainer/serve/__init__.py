"""The CPU inference server for rollouts: the trainer's own model behind an OpenAI-compatible API.

engine.py (generation, pause, weight swap between tokens), runner.py (the Transformer with a KV cache),
codec.py (tokenizer, chat template, tool calls), weights.py (committed checkpoints), server.py (HTTP),
ledger.py (the trainer-side reader of the data plane's trajectory ledger), fixture.py (tiny served models for tests),
__main__.py (`python -m trainflow_trainer.serve`). ADAPTERS.md maps the same contract onto vLLM/SGLang.
"""
