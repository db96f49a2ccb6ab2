"""The network only: config + presets, norms, rotary, attention, MLP, transformer.

No process groups, optimizer, logging or file I/O here; parallelism is applied
from outside (train/). Public API: `ModelConfig`, `GPT`, and the single attention
entry point `attention`.
"""

from model.attention import attention
from model.config import ModelConfig
from model.transformer import GPT

__all__ = ["GPT", "ModelConfig", "attention"]
