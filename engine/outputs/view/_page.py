"""The page: the template filled with the run's data, and a local server for it."""

from __future__ import annotations

import base64
import functools
import gzip
import http.server
import json
from importlib import resources
from pathlib import Path
from typing import Mapping

from engine.errors import LensauditError
from engine.outputs.view._data import Reader, view_data

#: Where the data goes in the template (inside a JSON script element).
PLACEHOLDER = "__LENSAUDIT_DATA__"


def _template() -> str:
    return (resources.files("engine.outputs.view") / "page.html").read_text(encoding="utf-8")


def page_html(data: dict) -> str:
    """The template with `data` embedded as gzip-compressed JSON in base64 (the
    page inflates it with the browser's own DecompressionStream): a simulated
    job's page of 100,000 cases was 16.5 MB as text, 1.4 MB so. Base64 holds no "<",
    so no text in the data (a reasoning that writes "</script>") can end the
    script element."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    return _template().replace(PLACEHOLDER, base64.b64encode(
        gzip.compress(payload, compresslevel=6, mtime=0)).decode("ascii"))


def data_of_page(html: str) -> dict:
    """The data a page written by `page_html` embeds (for tools and tests)."""
    start = _template().index(PLACEHOLDER)
    end = html.index("<", start)
    return json.loads(gzip.decompress(base64.b64decode(html[start:end])))


def write_view(run_dir: str | Path, out: str | Path | None = None,
               readers: Mapping[str, Reader] | None = None) -> Path:
    """Write `view.html` for a finished run (default: in the run directory);
    `readers` as in `view_data`."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "view.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page_html(view_data(run_dir, readers)), encoding="utf-8")
    return out


def serve(page: Path, port: int, host: str = "127.0.0.1", log=print) -> None:
    """Serve the page's folder on host:port until interrupted."""
    handler = functools.partial(_QuietHandler, directory=str(page.parent))
    try:
        httpd = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise LensauditError(f"--port {port}: cannot serve on {host} ({exc.strerror})") from None
    with httpd:
        log(f"serving http://{host}:{httpd.server_address[1]}/{page.name} (Ctrl-C stops)")
        httpd.serve_forever()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass  # the console shows what the user needs: the address, not every request
