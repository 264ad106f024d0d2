"""`lensaudit view RUN_DIR`: every case of a finished run in one offline page.

The page (`view.html`) is self-contained: its data is embedded as compressed
JSON (`data_of_page` reads it back) and its script and style are inline, so it
opens from a file, from an MLflow artifact or from `--serve` on 127.0.0.1, with
no network; it shows 100 cases a page, and filters and searches all of them.
`view_data` gathers what the run directory holds (results.json, cases.parquet,
each cell's decisions and policies); `write_view` fills the page template
(`page.html`) with it.
"""

from engine.outputs.view._data import view_data
from engine.outputs.view._page import data_of_page, serve, write_view

__all__ = ["data_of_page", "serve", "view_data", "write_view"]
