"""The network only: config + presets, norms, rotary, attention, MLP, MoE, transformer.

No process groups, optimizer, logging or file I/O here; parallelism is applied
from outside (train/). Public API: `ModelConfig` (with `MoEConfig`), `GPT` and what it
returns with targets, `ModelOutput`; the single attention entry point `attention`, the
mixture-of-experts layer `MoE` and `routing_stats` (model/moe.py).
"""

from strata.model.attention import attention
from strata.model.config import ModelConfig, MoEConfig
from strata.model.moe import MoE, routing_stats
from strata.model.transformer import GPT, ModelOutput

__all__ = ["GPT", "ModelConfig", "ModelOutput", "MoE", "MoEConfig", "attention", "routing_stats"]
