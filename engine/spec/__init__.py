"""The job spec: one YAML file, validated into typed sections.

It composes what each stage is asked to do (the case set, the models and
conditions, the decisions, the audit's `statistics:`, the outputs) and is read
by the job (`engine.job`) and recorded by the outputs.
"""

from engine.spec._job import (AlignmentSpec, CounterfactualSpec, CustomCondition, DatasetSpec,
                              DecisionSpec, ImportSpec, JobSpec, KNOWN_CONDITIONS, ModelSpec,
                              OutputSpec, SubsetSpec, load_job)

__all__ = ["KNOWN_CONDITIONS", "AlignmentSpec", "CounterfactualSpec", "CustomCondition",
           "DatasetSpec", "DecisionSpec", "ImportSpec", "JobSpec", "load_job", "ModelSpec",
           "OutputSpec", "SubsetSpec"]
