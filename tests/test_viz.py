"""kedro-viz serves the ablation graph with one collapsible namespace per variant of the environment.

A real ``kedro viz run --env test`` server is started on a free port of a throw-away project copy;
its JSON API is checked, and the page is rendered in headless Chromium when one is installed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

TEST_VARIANTS = {"resnet50", "aspp_crossscan_vit"}  # conf/test/parameters_ablation.yml
# A server start imports torch and builds the pipelines: 20-50 s on a loaded 2-core machine.
STARTUP_TIMEOUT_S = 300  # bounded wait for the server; generous for a loaded 2-core machine
CHROMIUM_TIMEOUT_S = 180


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


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(nothing)"


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it spawned."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.fixture
def viz_url(kedro_project: Path) -> Iterator[str]:
    """``kedro viz run --env test`` on a free port of the project copy; yields its base URL."""
    out, err = kedro_project / "viz.stdout", kedro_project / "viz.stderr"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "kedro", "viz", "run", "--no-browser"]
    command += ["--host", "127.0.0.1", "--port", str(_free_port()), "--env", "test"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            command,
            cwd=kedro_project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # one process group: the CLI and the server it spawns
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        url = None
        while url is None:
            if proc.poll() is not None:
                pytest.fail(
                    f"`{' '.join(command)}` exited with code {proc.returncode} before serving.\n"
                    f"stderr:\n{_tail(err)}\nstdout:\n{_tail(out)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"`{' '.join(command)}` did not answer within {STARTUP_TIMEOUT_S} s.\n"
                    f"stderr:\n{_tail(err)}\nstdout:\n{_tail(out)}"
                )
            # kedro-viz moves to the next port when the one asked for is taken: read where it runs.
            found = re.search(r"running at\s+(http://127\.0\.0\.1:\d+)/", _tail(out))
            if found:
                try:
                    _get_json(found.group(1) + "/api/main")
                    url = found.group(1)
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(1)
        yield url
    finally:
        _stop(proc)


def test_viz_loader_follows_the_environment_without_hooks(kedro_project: Path) -> None:
    """kedro-viz builds the context with every hook disabled (unless ``--include-hooks``).

    The project's context class, not only its hook, must hand ``--env``'s variants to the registry.
    """
    from kedro_viz.integrations.kedro.data_loader import load_data

    from facescan import pipeline_registry

    pipeline_registry.set_ablation_config({"variants": ["vit"]})  # stale: another env's variants
    _, pipelines, _ = load_data(kedro_project, env="test")
    assert {n.namespace for n in pipelines["ablation"].nodes} - {None} == TEST_VARIANTS


@pytest.mark.slow
def test_viz_api_has_the_ablation_pipeline_with_one_namespace_per_variant(viz_url: str) -> None:
    main = _get_json(viz_url + "/api/main")
    assert "ablation" in {p["id"] for p in main["pipelines"]}

    ablation = _get_json(viz_url + "/api/pipelines/ablation")
    assert ablation["selected_pipeline"] == "ablation"
    namespaces = set(ablation["modular_pipelines"]) - {"__root__"}
    assert namespaces == TEST_VARIANTS  # the test environment's variants, not conf/base's nine
    collapsible = {n["id"] for n in ablation["nodes"] if n["type"] == "modularPipeline"}
    assert collapsible == TEST_VARIANTS
    root = {c["id"] for c in ablation["modular_pipelines"]["__root__"]["children"]}
    assert root >= TEST_VARIANTS  # top level: shown collapsed until expanded
    for variant in TEST_VARIANTS:  # each namespace holds its training and evaluation nodes
        names = {
            n["name"] for n in ablation["nodes"] if variant in (n.get("modular_pipelines") or [])
        }
        assert f"{variant}.model" in names and f"{variant}.metrics" in names


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _GraphDom(HTMLParser):
    """Collects the graph nodes (``<g class="pipeline-node ...">``) and the active pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, str] = {}  # data-id -> data-node-type
        self.active_pipeline: str | None = None
        self._in_active = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "g" and "pipeline-node" in classes and a.get("data-id"):
            self.nodes[a["data-id"] or ""] = a.get("data-node-type") or ""
        if "pipeline-list__option--active" in classes:
            self._in_active = True
        elif self._in_active and a.get("title"):
            self.active_pipeline, self._in_active = a["title"], False


@pytest.mark.slow
def test_viz_page_renders_the_ablation_graph_with_variant_namespaces(
    viz_url: str, tmp_path: Path
) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip(
            "no Chromium (/usr/bin/chromium or `chromium` on PATH): apt-get install chromium"
        )
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
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=30000",
        "--dump-dom",
        viz_url + "/?pid=ablation&expandAllPipelines=false",
    ]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        dom, err = proc.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headless Chromium did not finish within {CHROMIUM_TIMEOUT_S} s: {command}")
    finally:
        _stop(proc)
    assert proc.returncode == 0, err.decode(errors="replace")[-4000:]

    page = _GraphDom()
    page.feed(dom.decode(errors="replace"))
    assert page.active_pipeline == "ablation", "the pipeline selector does not show `ablation`"
    collapsed = {i for i, kind in page.nodes.items() if kind == "modularPipeline"}
    assert collapsed == TEST_VARIANTS, f"variant namespaces drawn in the graph: {collapsed}"
    assert {"task", "data"} <= set(page.nodes.values())  # the rest of the graph is drawn too
