"""Stage 3, decisions: prompts -> decisions, kept in a Parquet store.

Ray actors host the engines (`engine.decisions.backends`: vLLM, an OpenAI-
compatible server, the simulated decision-makers), one pool per model, placed
so GPUs are never oversubscribed; every batch becomes one shard of the store,
and a re-run computes only the decisions it lacks.
"""

from engine.decisions._bundled import BUNDLED_MODELS, prepare_bundled_model
from engine.decisions._decide import (DecisionStore, EnginePools, ensure_ray, kill_pools, pending,
                                      reused, run_decisions, start_pools)
from engine.decisions._devices import vllm_devices

__all__ = ["BUNDLED_MODELS", "DecisionStore", "EnginePools", "ensure_ray", "kill_pools",
           "pending", "prepare_bundled_model", "reused", "run_decisions", "start_pools",
           "vllm_devices"]
