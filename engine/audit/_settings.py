"""The audit's section of a job spec (`statistics:`): how every policy is
fitted and how its uncertainty is measured. The job spec (`engine.spec`)
composes it with the other stages' sections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.files import SpecSection


class StatisticsSpec(SpecSection):
    C: float = Field(1.0, gt=0, description="inverse ridge penalty, same for every decision-maker")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples")
    permutations: int = Field(1000, ge=10, description="permutation refits")
    interval: Literal["basic", "percentile", "bca"] = Field("basic", description="bootstrap interval")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="where the refits run: auto (a Ray actor with a GPU when the "
        "job's Ray cluster has one and this process has none; else here), gpu (insist), cpu")
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="processes the cells' statistics run in, each pinned to one core "
        "(without a GPU actor): auto is one per core when bootstrap + permutations >= 1000, "
        "else 1 (this process); the numbers do not depend on it")
    level: float = Field(0.95, gt=0, lt=1, description="interval coverage")
    seed: int = Field(0, description="seed of the resampling")
    cv_folds: int = Field(10, ge=2, description="folds for the organisation's own CV accuracy")
    soft: Literal["auto", "off"] = Field(
        "auto", description="also fit each decision-maker's policy to its probabilities of the "
        "positive answer (r_cos_soft), where its backend gives them; off: the hard lens only")
    encoding: Literal["onehot_standardised", "label"] = Field(
        "onehot_standardised", description="the cue encoding of every fit: one-hot with every "
        "level kept, each column standardised (default); label: one column per cue, a category "
        "as its position among the sorted values present, nothing standardised (the CALM "
        "analysis code's). Prompts always state the one-hot policy")
