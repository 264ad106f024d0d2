"""A job, stage by stage: spec -> cases -> prompts -> decisions -> audit ->
outputs (`run_job`), its dry-run plan, and its submission to a Ray cluster."""

from engine.job._console import format_summary
from engine.job._decide import check_reused, decide, start_engines
from engine.job._plan import check_servers, load_cases, plan
from engine.job._run import own_policy, run_job, stated_policy
from engine.job._submit import add_submit_parser, build_submission

__all__ = ["add_submit_parser", "build_submission", "check_reused", "check_servers", "decide",
           "format_summary", "load_cases", "own_policy", "plan", "run_job", "start_engines",
           "stated_policy"]
