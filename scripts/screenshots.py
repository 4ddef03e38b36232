"""PNG screenshots for the docs: the kedro-viz graph of the ablation, and the HTML report.

    .venv/bin/python scripts/screenshots.py                     # this project, base env, docs/images/
    .venv/bin/python scripts/screenshots.py --project /tmp/p --env test --out /tmp/shots
    .venv/bin/python scripts/screenshots.py --what viz          # only the graph (no run needed)

Writes ``kedro_viz_ablation.png`` (the ``ablation`` pipeline, one collapsed namespace per variant of
the environment; its functions only, ``--types nodes,datasets`` adds the datasets) and ``ablation_report.png`` (the top of ``ablation_report``, which a run of the
``ablation`` pipeline writes; the script says so when it is missing). Needs headless Chromium
(``apt-get install chromium``); nothing is downloaded.

kedro-viz is started for the project (``kedro viz run --env <env>``) and shown through a small local
proxy that pre-sets the viewer's settings (no feature-hint tour, the chosen theme) and withholds the
version check (its "new version" banner would cover the graph); the graph itself is kedro-viz's own.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

VIZ_PNG = "kedro_viz_ablation.png"
REPORT_PNG = "ablation_report.png"
REPORT_DATASET = "ablation_report"


def viz_query(types: str) -> str:
    """kedro-viz's URL parameters: the ``ablation`` pipeline, namespaces collapsed, ``types`` shown.

    ``types`` is a comma-separated subset of ``nodes,datasets,parameters``; with the nine variants of
    ``base``, ``nodes`` (functions and the variant namespaces) keeps the labels readable.
    """
    return f"/?pid=ablation&expandAllPipelines=false&types={types}"


class ScreenshotError(RuntimeError):
    """A problem the user can fix; the message says how."""


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium binary: ``explicit``, /usr/bin/chromium, or ``chromium`` on PATH."""
    candidates = [explicit] if explicit else ["/usr/bin/chromium", "chromium", "chromium-browser"]
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise ScreenshotError(
        f"Chromium not found ({', '.join(c for c in candidates if c)}): install it "
        "(`apt-get install chromium` on Debian/Ubuntu) or pass --chromium /path/to/chromium"
    )


def report_path(project: Path, env: str) -> tuple[Path, Path]:
    """Where the ``ablation_report`` dataset of ``env`` lives: (the file, the catalog filepath).

    For a versioned dataset the file is the latest ``<filepath>/<version>/<name>``.

    Raises:
        ScreenshotError: when the catalog has no such entry, or the report was not written yet.
    """
    from facescan.pipeline_registry import config_loader

    conf = project / "conf"
    if not conf.is_dir():
        raise ScreenshotError(f"{conf} does not exist: pass --project <the Kedro project root>")
    with warnings.catch_warnings():  # omegaconf's deprecation notices about Kedro's resolvers
        warnings.simplefilter("ignore", UserWarning)
        loader = config_loader(conf, env=None if env == "base" else env)
        entry = loader["catalog"].get(REPORT_DATASET)
    if not isinstance(entry, dict) or not entry.get("filepath"):
        raise ScreenshotError(
            f"the catalog of env {env!r} under {conf} has no `{REPORT_DATASET}` with a filepath "
            "(expected in conf/base/catalog_reporting.yml)"
        )
    filepath = Path(str(entry["filepath"]))
    filepath = filepath if filepath.is_absolute() else project / filepath
    run = "make ablation" if env == "base" else f"kedro run --pipelines ablation --env {env}"
    hint = f"run `{run}` first (or pass --what viz for the graph alone)"
    if entry.get("versioned"):
        versions = sorted(p for p in filepath.glob(f"*/{filepath.name}") if p.is_file())
        if not versions:
            raise ScreenshotError(f"no version of the HTML report under {filepath}/: {hint}")
        return versions[-1], filepath
    if not filepath.is_file():
        raise ScreenshotError(f"the HTML report {filepath} does not exist yet: {hint}")
    return filepath, filepath


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it spawned."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            continue


def _free_port() -> int:
    """A free TCP port below 32768: kedro-viz refuses ports above 49151 (the OS may hand those out)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port between 20000 and 32000 for kedro-viz")


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextmanager
def kedro_viz(project: Path, env: str, logs: Path, timeout_s: float) -> Iterator[str]:
    """``kedro viz run`` for ``project`` in ``env`` on a free port; yields its base URL once it
    answers and stops it afterwards (also used by tests/test_viz.py).

    Its output goes to ``logs``/kedro-viz.stdout and .stderr; the environment is this process's.

    Raises:
        ScreenshotError: it exited, or did not answer within ``timeout_s``.
    """
    out, err = logs / "kedro-viz.stdout", logs / "kedro-viz.stderr"
    command = [sys.executable, "-m", "kedro", "viz", "run", "--no-browser"]
    command += ["--host", "127.0.0.1", "--port", str(_free_port()), "--env", env]
    environ = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            command,
            cwd=project,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        yield _wait_for_viz(proc, command, out, err, timeout_s)
    finally:
        stop_process(proc)


def _wait_for_viz(
    proc: subprocess.Popen, command: list[str], out: Path, err: Path, timeout_s: float
) -> str:
    """The URL kedro-viz serves once ``/api/main`` answers (bounded by ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ScreenshotError(
                f"`{' '.join(command)}` exited with code {proc.returncode}:\n"
                f"{_tail(err)}{_tail(out)}"
            )
        if time.monotonic() > deadline:
            raise ScreenshotError(
                f"`{' '.join(command)}` did not answer within {timeout_s:.0f} s (--timeout):\n"
                f"{_tail(err)}"
            )
        # kedro-viz takes the next port when the one asked for is busy: read where it runs.
        found = re.search(r"running at\s+(http://127\.0\.0\.1:\d+)/", _tail(out))
        if found:
            try:
                with urllib.request.urlopen(found.group(1) + "/api/main", timeout=30) as r:
                    if r.status == 200:
                        return found.group(1)
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(1)


def _viewer_settings_script(theme: str, orientation: str) -> bytes:
    settings = {
        "showFeatureHints": False,
        "featureHintStep": 0,
        "theme": theme,
        "orientation": orientation,
        "expandAllPipelines": False,
        "visible": {"graph": True, "sidebar": True, "miniMap": False},
    }
    return f"<script>localStorage.setItem('KedroViz', '{json.dumps(settings)}');</script>".encode()


@contextmanager
def settings_proxy(upstream: str, theme: str, orientation: str) -> Iterator[str]:
    """A local proxy to ``upstream`` (kedro-viz) that pre-sets the viewer's settings.

    The page gets a script setting kedro-viz's ``localStorage`` before the app starts, and
    ``/api/version`` answers 404 so that no "new version" banner is drawn over the graph.
    """
    inject = _viewer_settings_script(theme, orientation)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if urlsplit(self.path).path.rstrip("/") == "/api/version":
                self.send_error(404)
                return
            try:
                with urllib.request.urlopen(upstream + self.path, timeout=60) as response:
                    status, headers, body = response.status, response.headers, response.read()
            except urllib.error.HTTPError as error:
                status, headers, body = error.code, error.headers, error.read()
            content_type = headers.get("Content-Type", "application/octet-stream")
            if content_type.startswith("text/html"):
                body = body.replace(b"<head>", b"<head>" + inject, 1)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def headless_chromium(
    chromium: str,
    profile: Path,
    args: Sequence[str],
    budget_ms: int = 30000,
    timeout_s: float = 180,
) -> tuple[int, bytes, bytes]:
    """Run headless Chromium with ``args`` (what to do, the URL last); (exit code, stdout, stderr).

    ``budget_ms`` of virtual time lets the page load, lay out and animate before ``--screenshot``
    or ``--dump-dom`` (tests/test_viz.py) takes it; ``profile`` is its user data directory.

    Raises:
        ScreenshotError: it took over ``timeout_s``.
    """
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        *args,
    ]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ScreenshotError(
            f"headless Chromium took over {timeout_s:.0f} s on {args[-1]}: {command}"
        ) from exc
    finally:
        stop_process(proc)
    return proc.returncode, out, err


def chromium_screenshot(
    chromium: str,
    url: str,
    png: Path,
    profile: Path,
    window: str = "1600,1000",
    budget_ms: int = 30000,
    timeout_s: float = 180,
) -> None:
    """Render ``url`` in headless Chromium and save a PNG of the window.

    ``budget_ms`` of virtual time lets the page load, lay out and animate before the capture.
    """
    png.unlink(missing_ok=True)
    args = ["--hide-scrollbars", f"--window-size={window}", f"--screenshot={png}", url]
    returncode, _, err = headless_chromium(chromium, profile, args, budget_ms, timeout_s)
    if returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        raise ScreenshotError(
            f"headless Chromium made no screenshot of {url} (exit {returncode}):\n"
            f"{err.decode(errors='replace')[-3000:]}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="Kedro project root")
    parser.add_argument("--env", default="base", help="Kedro environment (default: base)")
    parser.add_argument("--out", type=Path, default=None, help="default: <project>/docs/images")
    parser.add_argument("--what", choices=("all", "viz", "report"), default="all")
    parser.add_argument("--theme", choices=("light", "dark"), default="light", help="kedro-viz")
    parser.add_argument(
        "--types", default="nodes", help="shown in the graph: nodes[,datasets][,parameters]"
    )
    parser.add_argument("--orientation", choices=("vertical", "horizontal"), default="vertical")
    parser.add_argument("--window", default="1600,1000", help="width,height in CSS pixels")
    parser.add_argument("--report-window", default="1600,1000", help="width,height for the report")
    parser.add_argument("--budget-ms", type=int, default=30000, help="virtual time to render")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for kedro-viz to start")
    parser.add_argument("--chromium", default=None, help="path to the Chromium binary")
    args = parser.parse_args(argv)

    project = args.project.resolve()
    out = (args.out or project / "docs" / "images").resolve()
    try:
        if not (project / "pyproject.toml").is_file():
            raise ScreenshotError(f"{project} has no pyproject.toml: pass --project <project root>")
        chromium = find_chromium(args.chromium)
        report = report_path(project, args.env)[0] if args.what != "viz" else None
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="facescan-screenshots-") as tmp:
            work = Path(tmp)
            if args.what != "report":
                with (
                    kedro_viz(project, args.env, work, args.timeout) as upstream,
                    settings_proxy(upstream, args.theme, args.orientation) as url,
                ):
                    chromium_screenshot(
                        chromium,
                        url + viz_query(args.types),
                        out / VIZ_PNG,
                        work / "profile-viz",
                        args.window,
                        args.budget_ms,
                    )
                print(out / VIZ_PNG)
            if report is not None:
                chromium_screenshot(
                    chromium,
                    report.as_uri(),
                    out / REPORT_PNG,
                    work / "profile-report",
                    args.report_window,
                    min(args.budget_ms, 10000),
                )
                print(f"{out / REPORT_PNG} (from {report})")
    except ScreenshotError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
