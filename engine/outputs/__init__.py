"""Stage 5, outputs: a job's results, where people read them.

The run folder's results file, MLflow runs (one parent per job, one child per
cell), the HTML report with its figures, `lensaudit compare` across runs, and
the case viewer (`engine.outputs.view`).
"""

from engine.outputs._compare import add_compare_parser, compare_runs
from engine.outputs._report import table_html, write_page, write_peer_report, write_report
from engine.outputs._tracking import (check_tracking, log_run_dir, save_lens_results,
                                      save_results, tracking_uri, ui_command)

__all__ = ["add_compare_parser", "check_tracking", "compare_runs", "log_run_dir",
           "save_lens_results", "save_results", "table_html", "tracking_uri", "ui_command",
           "write_page", "write_peer_report", "write_report"]
