"""Does `p_positive` say how often the model's own constrained sampler answers Good?

The bundled model decides German Credit cases (the demo's subset); per case,
lensaudit's p_positive (the summed mass of the tokens that begin each choice,
`engine/decisions/backends/_vllm.py`, `prefix_tokens`) beside the share of
Good among --samples answers vLLM samples at temperature 1 under the same
choice constraint, and the p_positive the whole-word tokens alone would give.
benchmarks/README.md, "choice_probabilities.py", has a run.

    python benchmarks/choice_probabilities.py [--cases 20] [--samples 200]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20, help="cases (half Good, half Bad)")
    ap.add_argument("--samples", type=int, default=200, help="sampled answers per case")
    args = ap.parse_args()

    import numpy as np
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from engine.datasets import load_shipped
    from engine.decisions.backends import VLLMDecider
    from engine.job import start_engines
    from engine.prompts import build_requests
    from engine.spec import load_job

    engines, _ = start_engines(load_job(str(ROOT / "jobs" / "german_credit_demo.yaml")))
    decider = VLLMDecider(next(iter(engines.values()))[0])
    cases = load_shipped("german_credit").subset(per_class=args.cases // 2, seed=0)
    requests = build_requests(cases, "bundled:smollm2-135m", "baseline")
    rows = decider.decide(requests, temperature=1.0, seed=0)
    p = np.array([r["p_positive"] for r in rows])
    good_id, bad_id = (decider.tokenizer.encode(c, add_special_tokens=False)[0]
                       for c in ("Good", "Bad"))
    sampler = SamplingParams(temperature=1.0, n=args.samples, max_tokens=8,
                             structured_outputs=StructuredOutputsParams(choice=["Good", "Bad"]),
                             logprobs=2, logprob_token_ids=[good_id, bad_id])
    outs = decider.llm.chat([list(r.messages) for r in requests], [sampler] * len(requests),
                            use_tqdm=False)
    share = np.array([np.mean([o.text.strip() == "Good" for o in out.outputs]) for out in outs])
    whole = []
    for out in outs:  # the whole-word tokens' log-probabilities, the same in every sample
        first = out.outputs[0].logprobs[0]
        good, bad = math.exp(first[good_id].logprob), math.exp(first[bad_id].logprob)
        whole.append(good / (good + bad))
    tokens = {c: [decider.tokenizer.decode([i]) for i in ids]
              for c, ids in decider.choice_tokens(("Good", "Bad")).items()}
    sd = math.sqrt(float(np.mean(share * (1 - share))) / args.samples)
    print(f"tokens that begin each choice: {json.dumps(tokens)}")
    print(f"{len(requests)} cases x {args.samples} samples at temperature 1: the sampler "
          f"answered Good {share.mean():.3f} of the time; mean p_positive {p.mean():.3f} "
          f"(whole-word tokens alone: {np.mean(whole):.3f})")
    print(f"per case, |share - p_positive|: mean {np.abs(share - p).mean():.3f}, largest "
          f"{np.abs(share - p).max():.3f} (a share's binomial sd about {sd:.3f}); "
          f"|share - whole-word p|: mean {np.abs(share - np.array(whole)).mean():.3f}")


if __name__ == "__main__":
    main()
