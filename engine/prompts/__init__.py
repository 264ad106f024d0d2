"""Stage 2, prompts: how a case becomes a chat prompt under a condition.

Conditions (baseline, org_externalized, introspective and a job's own) turn
the case set of `engine.datasets` into `engine.records.PromptRequest`s for the
decision stage; counterfactual twins are more cases, each with one cue changed.
"""

from engine.prompts._conditions import (CONDITION_DEPENDENCIES, PLACEHOLDERS, Policy,
                                        PromptContext, attribute_weights, build_requests,
                                        condition_waves, system_message, weight_tiers)
from engine.prompts._twins import check_cues, twin_cases

__all__ = ["CONDITION_DEPENDENCIES", "PLACEHOLDERS", "attribute_weights", "build_requests",
           "check_cues", "condition_waves", "Policy", "PromptContext", "system_message",
           "twin_cases", "weight_tiers"]
