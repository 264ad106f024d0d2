"""Attribute alignment (the ALIGN framework): aligned decision-makers on scenario probes.

An aligned decision-maker (ADM) = backbone x method x target. `data` reads
probes (the MTA medical-triage set, or any align-system input/output file);
`adm` turns a probe into a prompt for a method and target; `metric` scores
alignment accuracy; `lens` audits steered ADMs against their baseline in the
lens model, through the audit stage; `job` runs it all.
"""

from engine.align._view import VIEW_READERS

__all__ = ["VIEW_READERS"]
