"""Language models behind one interface (see ``registry.py``): the GPT family and the GRU baseline.

``Model(config)``, ``init_weights()``, ``forward(idx, targets=None, cache=None)``, ``new_cache(...)``,
``num_params()``, ``flops_per_token()``, ``param_table()``. No file here does I/O or picks a device.
"""

from lmforge.models.gpt import GPT, GPTConfig
from lmforge.models.gru import GRULM, GRUConfig
from lmforge.models.registry import MODELS, build_model, model_config_from_dict

__all__ = ["GPT", "GPTConfig", "GRULM", "GRUConfig", "MODELS", "build_model", "model_config_from_dict"]
