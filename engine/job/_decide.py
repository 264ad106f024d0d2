"""A job's decision stage: its engines, and each wave's requests decided on
their models' backends, with the stored decisions it reuses said."""

from __future__ import annotations

from engine.decisions import DecisionStore, pending, reused, run_decisions
from engine.decisions.backends import EngineConfig, prepare_model, run_openai
from engine.errors import LensauditError
from engine.spec import JobSpec


def start_engines(spec: JobSpec) -> tuple[dict, dict]:
    """Engine configs of the models served by vLLM, and every model's backend."""
    engines, backends = {}, {}
    for m in spec.models:
        resolved = prepare_model(m.name)
        backends[m.name] = resolved.backend
        if resolved.backend == "vllm":
            engines[m.name] = (EngineConfig(resolved.path, m.name, m.tensor_parallel_size,
                                            m.max_model_len, m.cpu_memory_fraction,
                                            seed=spec.decision.seed, dtype=m.dtype,
                                            block_size=m.kv_block_size), m.replicas)
    return engines, backends


def decide(spec: JobSpec, requests: list, store: DecisionStore, engines: dict, backends: dict,
           pools, *, progress: bool = True, simulate=None, again: frozenset = frozenset()) -> int:
    """Compute the pending requests, and those whose key is in `again` (stored,
    but made otherwise: `check_reused`), each model on its backend; returns how
    many."""
    d = spec.decision
    todo = pending(requests, store, again)
    by_backend: dict[str, list] = {}
    for r in todo:
        by_backend.setdefault(backends[r.model], []).append(r)
    n = 0
    if by_backend.get("simulated"):
        if simulate is None:
            raise LensauditError("the simulated backend has no policy for this job")
        n += simulate(by_backend["simulated"])
    for m in spec.models:
        reqs = [r for r in by_backend.get("openai", []) if r.model == m.name]
        n += run_openai(reqs, store, m.openai_config(), temperature=d.temperature, seed=d.seed,
                        batch_size=d.batch_size, progress=progress,
                        reasoning_max_tokens=d.reasoning_max_tokens)
    n += run_decisions(by_backend.get("vllm", []), store, engines, batch_size=d.batch_size,
                       temperature=d.temperature, seed=d.seed,
                       cache_root=str((spec.run_dir() / ".vllm_cache").resolve()),
                       progress=progress, pools=pools,
                       reasoning_max_tokens=d.reasoning_max_tokens, again=again)
    return n


def check_reused(requests: list, store: DecisionStore, decision, log) -> frozenset:
    """The keys to decide again, and a line per reason where stored decisions
    were made otherwise than this job would make them (`engine.decisions.reused`),
    with how many in each cell (three named, then how many more: an alignment
    job has dozens, and one changed setting reaches them all). With
    `decision.reuse: any` they are reused and the line is a warning; with
    `same` they are decided again (the new decisions replace them)."""
    by_why: dict[str, dict[tuple[str, str], int]] = {}
    again = set()
    for r, why in reused(requests, store, temperature=decision.temperature, seed=decision.seed):
        cells = by_why.setdefault(why, {})
        cells[(r.model, r.condition)] = cells.get((r.model, r.condition), 0) + 1
        again.add(r.key)
    for why, cells in by_why.items():
        counts = list(cells.items())
        where = ", ".join(f"{n} in {model} x {condition}" for (model, condition), n in counts[:3])
        if len(counts) > 3:
            where += (f" and {sum(n for _, n in counts[3:])} in {len(counts) - 3} more "
                      "cell(s)")
        if decision.reuse == "same":
            log(f"deciding again the stored decisions this job would make otherwise, {why}: "
                f"{where}")
        else:
            log(f"warning: stored decisions are reused that this job would make otherwise, "
                f"{why}: {where}; to decide them again, set decision.reuse=same")
    return frozenset(again) if decision.reuse == "same" else frozenset()
