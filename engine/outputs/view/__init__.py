"""`lensaudit view RUN_DIR`: every case of a finished run in one offline page.

The page (`view.html`) is self-contained: its data is embedded as JSON and its
script and style are inline, so it opens from a file, from an MLflow artifact or
from `--serve` on 127.0.0.1, with no network. `view_data` gathers what the run
directory holds (results.json, cases.parquet, each cell's decisions and
policies); `write_view` fills the page template (`page.html`) with it.
"""

from engine.outputs.view._data import view_data
from engine.outputs.view._page import serve, write_view

__all__ = ["serve", "view_data", "write_view"]
