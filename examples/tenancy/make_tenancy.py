"""Write the tenancy example: 360 letting decisions with a known policy, and a
review panel's decisions on some of the same applications.

    python examples/tenancy/make_tenancy.py      # rewrites the CSVs beside this file

The letting agent (the organisation) decides by a logistic policy on ability to
pay and tenancy record, and puts no weight on nationality or age. The review
panel (three members per application, 200 applications) weighs the same cues
and, unlike the agent, marks down two nationalities: an audit should find the
panel's weight on the protected cues and not the agent's. Seeded: the files are
the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
N_CASES, N_PANEL_CASES, PANEL_MEMBERS, SEED = 360, 200, 3, 2026
NATIONALITIES = ["DE", "PL", "TR", "SY"]


def applications(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """The applicants' cues, as a letting agent's spreadsheet holds them."""
    return pd.DataFrame({
        "application": [f"T{i:04d}" for i in range(1, n + 1)],
        "monthly_income": rng.lognormal(np.log(2600), 0.35, n).round(-1).astype(int),
        "rent": rng.choice([650, 800, 950, 1100], n),
        "years_employed": rng.gamma(2.0, 2.5, n).round(1),
        "prior_eviction": rng.choice(["no", "yes"], n, p=[0.9, 0.1]),
        "references": rng.choice(["none", "one", "two_or_more"], n, p=[0.25, 0.45, 0.3]),
        "pets": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
        "nationality": rng.choice(NATIONALITIES, n, p=[0.55, 0.2, 0.15, 0.1]),
        "age": rng.integers(19, 75, n),
    })


def log_odds(df: pd.DataFrame, *, biased: bool) -> np.ndarray:
    """The known policy: income relative to rent, employment, record, references;
    the biased panel also marks down TR and SY applicants."""
    ratio = df["monthly_income"] / df["rent"]
    z = (1.6 * (ratio - ratio.mean()) / ratio.std()
         + 0.5 * (df["years_employed"] - df["years_employed"].mean()) / df["years_employed"].std()
         - 2.0 * (df["prior_eviction"] == "yes")
         + df["references"].map({"none": -0.8, "one": 0.0, "two_or_more": 0.6})
         - 0.3 * (df["pets"] == "yes") + 0.4)
    if biased:
        z = z - 1.8 * df["nationality"].isin(["TR", "SY"])
    return z.to_numpy(float)


def main(out: Path = HERE) -> None:
    """Write tenancy.csv and panel.csv into `out`."""
    out = Path(out)
    rng = np.random.default_rng(SEED)
    cases = applications(rng, N_CASES)
    offer = rng.random(N_CASES) < 1 / (1 + np.exp(-log_odds(cases, biased=False)))
    cases["agent_decision"] = np.where(offer, "Offer", "Decline")
    cases.to_csv(out / "tenancy.csv", index=False)

    reviewed = cases.iloc[np.sort(rng.choice(N_CASES, N_PANEL_CASES, replace=False))]
    p = 1 / (1 + np.exp(-log_odds(reviewed, biased=True)))
    rows = [{"application": a, "member": f"member_{k + 1}",
             "verdict": "Offer" if rng.random() < pi else "Decline"}
            for a, pi in zip(reviewed["application"], p) for k in range(PANEL_MEMBERS)]
    pd.DataFrame(rows).to_csv(out / "panel.csv", index=False)


if __name__ == "__main__":
    main()
