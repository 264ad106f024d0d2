"""Decisions per second on the same prompts and the bundled model, four ways.

(a) raw `vllm.LLM.chat` in this process (constrained choice, as the engine does);
(b) lensaudit's engine: `run_decisions` with a Ray actor hosting the same engine,
    writing Parquet shards;
(c) the align-system path: transformers, one prompt at a time, JSON generation
    with a reasoning field (align-system's 512-character cap) before the answer
    (timed on --slow-n prompts);
(d) transformers, batched, one forward pass per prompt reading the choice logits.

Engine start and warm-up are excluded from every figure: each path first decides
WARM_N prompts that are not among the timed ones (so no timed prompt is already
in a prefix cache), and only the decision phase is timed. Prints dec/s and b/a, b/c.

    python benchmarks/decisions.py [--n 160] [--slow-n 12] [--batch 40] [--paths abcd]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


#: Warm-up prompts, decided before the timed ones and kept out of them.
WARM_N = 8


def prompts(n: int):
    from engine.prompts import build_requests
    from engine.datasets import load_german_credit

    cases = load_german_credit().subset(n=n, seed=0)
    return build_requests(cases, "bundled:smollm2-135m", "baseline")


def bench_engine(reqs, warm, path, batch):
    import ray

    from engine.decisions.backends._vllm import EngineConfig
    from engine.decisions import DecisionStore, EnginePools, run_decisions

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    tmp = tempfile.mkdtemp()
    engines = {"bundled:smollm2-135m": (EngineConfig(path, "bundled:smollm2-135m"), 1)}
    pools = EnginePools()
    kw = dict(batch_size=batch, temperature=0.0, seed=0, cache_root=tmp, progress=False,
              pools=pools)
    try:
        run_decisions(warm, DecisionStore(f"{tmp}/warm"), engines, **kw)  # start + warm
        start = time.perf_counter()
        n = run_decisions(reqs, DecisionStore(f"{tmp}/run"), engines, **kw)
        return n / (time.perf_counter() - start)
    finally:
        pools.kill()
        ray.shutdown()


def bench_raw_vllm(reqs, warm, path, batch):
    from engine.decisions.backends._vllm import EngineConfig, VLLMDecider

    decider = VLLMDecider(EngineConfig(path, "raw"))
    params = decider._params(reqs[0], 0.0)
    msgs = [list(r.messages) for r in reqs]
    decider.llm.chat([list(r.messages) for r in warm], params, use_tqdm=False)  # warm
    start = time.perf_counter()
    for i in range(0, len(msgs), batch):
        decider.llm.chat(msgs[i:i + batch], params, use_tqdm=False)
    rate = len(msgs) / (time.perf_counter() - start)
    try:
        decider.llm.llm_engine.engine_core.shutdown()
    except Exception:
        pass
    del decider
    gc.collect()
    return rate


# Published architectures for --random-weights (their config.json values). A GPU
# host that reaches no model hub cannot fetch weights; timings of (c) and (d) depend
# on the architecture and the token counts, not on the weights' values.
ARCHITECTURES = {
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32, head_dim=64,
                         vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True, rope_theta=130000.0),
}


def load_hf(path, device="cpu", dtype="float32", random_weights=None):
    """Tokenizer and model from `path`; with `random_weights` (a key of
    ARCHITECTURES) the model is that architecture, randomly initialised, and
    `path` only gives the tokenizer (SmolLM2 sizes share one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    if device == "cpu":
        torch.set_num_threads(os.cpu_count())
    tok = AutoTokenizer.from_pretrained(path)
    torch_dtype = getattr(torch, dtype)
    if random_weights:
        torch.manual_seed(0)
        config = LlamaConfig(**ARCHITECTURES[random_weights], bos_token_id=1, eos_token_id=2)
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    return tok, model.to(device).eval()


def _sync(model):
    import torch

    if model.device.type == "cuda":
        torch.cuda.synchronize()


# align-system's action-choice JSON schema caps its reasoning string at 512
# characters (outlines_prompts.action_choice_json_schema, reasoning_max_length).
ALIGN_SYSTEM_REASONING_MAX_CHARS = 512


def bench_align_system_path(reqs, warm, tok, model, slow_n, max_chars, fixed_tokens=None):
    """align-system's outlines ADM, one prompt at a time: JSON
    {"reasoning": <string of at most max_chars characters>, "answer": <one of the
    choices>}. The reasoning is decoded greedily (the engine's temperature 0)
    until the string closes or reaches max_chars; the answer is then read from the
    choice tokens' logits after the forced `", "answer": "` (the enum constraint).
    `fixed_tokens` decodes exactly that many reasoning tokens instead (random
    weights, whose text never closes a string: timing only).

    Returns (decisions per second, mean reasoning tokens per decision)."""
    import torch
    from transformers import StoppingCriteria

    choice_ids = [tok.encode(c, add_special_tokens=False)[0] for c in reqs[0].choices]
    tail = tok('", "answer": "', add_special_tokens=False,
               return_tensors="pt").input_ids.to(model.device)

    class StringClosed(StoppingCriteria):
        """Stops when the generated JSON string closes or hits max_chars."""

        def __init__(self, prompt_len):
            self.prompt_len = prompt_len

        def __call__(self, ids, scores, **kw):
            text = tok.decode(ids[0, self.prompt_len:])
            return '"' in text or len(text) >= max_chars

    def one(r):
        msgs = list(r.messages) + [{"role": "assistant", "content": '{"reasoning": "'}]
        text = tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True)
        ids = tok(text, return_tensors="pt").input_ids.to(model.device)
        if fixed_tokens:
            limits = dict(max_new_tokens=fixed_tokens, min_new_tokens=fixed_tokens)
        else:
            limits = dict(max_new_tokens=max_chars,
                          stopping_criteria=[StringClosed(ids.shape[1])])
        with torch.no_grad():
            out = model.generate(ids, do_sample=False, pad_token_id=tok.eos_token_id, **limits)
            # The enum-constrained answer: one more forward pass, read at the choices.
            model(torch.cat([out, tail], 1)).logits[0, -1, choice_ids].argmax()
        return out.shape[1] - ids.shape[1]

    one(warm[0])  # warm
    _sync(model)
    start = time.perf_counter()
    tokens = [one(r) for r in reqs[:slow_n]]
    _sync(model)
    return slow_n / (time.perf_counter() - start), sum(tokens) / len(tokens)


def bench_hf_batched(reqs, warm, tok, model, batch):
    import torch

    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    choice_ids = [tok.encode(c, add_special_tokens=False)[0] for c in reqs[0].choices]

    def render(rs):
        return [tok.apply_chat_template(list(r.messages), tokenize=False,
                                        add_generation_prompt=True) for r in rs]

    texts = render(reqs)

    def run(chunk):
        enc = tok(chunk, return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            # Only the last position's logits are read: skip the rest of the LM head.
            logits = model(**enc, logits_to_keep=1).logits[:, -1, :]
        return torch.softmax(logits[:, choice_ids], -1).cpu()

    run(render(warm[:4]))  # warm
    _sync(model)
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        run(texts[i:i + batch])
    _sync(model)
    return len(texts) / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=160, help="prompts for (a), (b), (d)")
    ap.add_argument("--slow-n", type=int, default=12, help="prompts for (c)")
    ap.add_argument("--reasoning-max-chars", type=int, default=ALIGN_SYSTEM_REASONING_MAX_CHARS,
                    help="(c)'s reasoning length cap (align-system's schema: 512)")
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--skip-vllm", action="store_true", help="(c) and (d) only (GPU without vLLM)")
    ap.add_argument("--paths", default="abcd", help="which of (a) to (d) to run, e.g. acd")
    ap.add_argument("--model-path", help="a local HF model folder (default: the bundled model)")
    ap.add_argument("--device", default="cpu", help="torch device for (c) and (d), e.g. cuda")
    ap.add_argument("--dtype", default="float32", help="torch dtype for (c) and (d)")
    ap.add_argument("--random-weights", choices=sorted(ARCHITECTURES),
                    help="(c), (d): this architecture with random weights (timing only; "
                         "--model-path gives the tokenizer); implies --skip-vllm")
    ap.add_argument("--reasoning-tokens", type=int,
                    help="(c): decode exactly this many reasoning tokens (needed with "
                         "--random-weights; 120 = the bundled model's mean here)")
    args = ap.parse_args()
    if args.random_weights:
        args.skip_vllm = True
    if args.skip_vllm:
        args.paths = "".join(p for p in args.paths if p in "cd")

    from engine.decisions import prepare_bundled_model

    path = args.model_path or str(prepare_bundled_model("smollm2-135m"))
    everything = prompts(args.n + WARM_N)
    reqs, warm = everything[:args.n], everything[args.n:]
    print(f"{len(reqs)} German Credit prompts (+{len(warm)} for warm-up), model {path}; "
          f"{os.cpu_count()} cores, {platform.machine()}", flush=True)
    rates = {}
    if "b" in args.paths:
        rates["b"] = bench_engine(reqs, warm, path, args.batch)
        print(f"(b) lensaudit engine (Ray actor + vLLM): {rates['b']:.2f} dec/s", flush=True)
    if "a" in args.paths:
        rates["a"] = bench_raw_vllm(reqs, warm, path, args.batch)
        print(f"(a) raw vllm.LLM.chat in-process:        {rates['a']:.2f} dec/s", flush=True)
    if not set(args.paths) & set("cd"):
        print(json.dumps({k: round(v, 4) for k, v in rates.items()}))
        return
    tok, model = load_hf(path, args.device, args.dtype, args.random_weights)
    if args.random_weights or args.device != "cpu":
        import torch

        gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
        print(f"(c), (d) on {gpu}, {args.dtype}, "
              f"{args.random_weights or 'model'} ({model.num_parameters() / 1e9:.2f} B parameters"
              f"{', random weights' if args.random_weights else ''})", flush=True)
    if "c" in args.paths:
        rates["c"], reasoning_tokens = bench_align_system_path(
            reqs, warm, tok, model, args.slow_n, args.reasoning_max_chars, args.reasoning_tokens)
        print(f"(c) transformers, one prompt, JSON+reasoning: {rates['c']:.3f} dec/s "
              f"(timed on {args.slow_n}; {reasoning_tokens:.0f} reasoning tokens each)",
              flush=True)
    if "d" in args.paths:
        rates["d"] = bench_hf_batched(reqs, warm, tok, model, args.batch // 2 or 1)
        print(f"(d) transformers, batched forward, choice logits: {rates['d']:.2f} dec/s",
              flush=True)
    if set("abcd") <= set(rates):
        print(f"b/a = {rates['b'] / rates['a']:.2f}   b/c = {rates['b'] / rates['c']:.1f}   "
              f"b/d = {rates['b'] / rates['d']:.2f}")
    print(json.dumps({k: round(v, 4) for k, v in rates.items()}))


if __name__ == "__main__":
    main()
