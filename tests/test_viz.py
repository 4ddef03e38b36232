"""kedro-viz serves the ablation graph with one collapsible namespace per variant of the environment.

A real ``kedro viz run --env test`` server is started on a free port of a throw-away project copy;
its JSON API is checked, and the page is rendered in headless Chromium when one is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

TEST_VARIANTS = {"resnet50", "aspp_crossscan_vit"}  # conf/test/parameters_ablation.yml
# A server start imports torch and builds the pipelines: 20-50 s on a loaded 2-core machine.
STARTUP_TIMEOUT_S = 300  # bounded wait for the server; generous for a loaded 2-core machine
CHROMIUM_TIMEOUT_S = 180


def _screenshots() -> ModuleType:
    """scripts/screenshots.py, which starts kedro-viz and headless Chromium for the docs too."""
    spec = importlib.util.spec_from_file_location(
        "screenshots", REPO / "scripts" / "screenshots.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screenshots = _screenshots()


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.fixture
def viz_url(kedro_project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``kedro viz run --env test`` on a free port of the project copy; yields its base URL."""
    if "OMP_NUM_THREADS" not in os.environ:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the server, which inherits it
    try:
        with screenshots.kedro_viz(kedro_project, "test", kedro_project, STARTUP_TIMEOUT_S) as url:
            yield url
    except screenshots.ScreenshotError as exc:
        pytest.fail(str(exc))


def test_viz_loader_follows_the_environment_without_hooks(kedro_project: Path) -> None:
    """kedro-viz builds the context with every hook disabled (unless ``--include-hooks``).

    The project's context class must hand ``--env``'s variants to the registry.
    """
    from kedro_viz.integrations.kedro.data_loader import load_data

    from facescan import pipeline_registry

    pipeline_registry.use_ablation({"variants": ["vit"]})  # stale: another env's variants
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
    try:
        chromium = screenshots.find_chromium()
    except screenshots.ScreenshotError as exc:
        pytest.skip(str(exc))
    url = viz_url + "/?pid=ablation&expandAllPipelines=false"
    try:
        returncode, dom, err = screenshots.headless_chromium(
            chromium,
            tmp_path / "chromium-profile",
            ["--dump-dom", url],
            budget_ms=30000,
            timeout_s=CHROMIUM_TIMEOUT_S,
        )
    except screenshots.ScreenshotError as exc:
        pytest.fail(str(exc))
    assert returncode == 0, err.decode(errors="replace")[-4000:]

    page = _GraphDom()
    page.feed(dom.decode(errors="replace"))
    assert page.active_pipeline == "ablation", "the pipeline selector does not show `ablation`"
    collapsed = {i for i, kind in page.nodes.items() if kind == "modularPipeline"}
    assert collapsed == TEST_VARIANTS, f"variant namespaces drawn in the graph: {collapsed}"
    assert {"task", "data"} <= set(page.nodes.values())  # the rest of the graph is drawn too
