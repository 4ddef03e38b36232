"""``evaluate_external --namespaces <run>``: build the external data first, as a full run would."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

logger = logging.getLogger(__name__)

#: What the scoring nodes read that the shared (un-namespaced) external data nodes write.
SHARED_OUTPUT = "external_cache"


class ExternalDataHook:
    """Kedro's ``--namespaces`` filter keeps only the chosen runs' nodes, which drops the shared
    nodes that ingest and cache ``external.source``: scoring then read whatever cache was on disk
    (or stopped on a missing one). When a run needs ``external_cache`` and no node of it writes it,
    this hook runs those shared nodes first, on the run's catalog (``external.source`` as
    configured now), so ``evaluate_external --namespaces <variant>`` works like ``predict
    --namespaces <variant>``."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        needed = any(SHARED_OUTPUT in n.inputs for n in pipeline.nodes)
        if not needed or SHARED_OUTPUT in pipeline.all_outputs():
            return
        from kedro.framework.project import pipelines

        shared = Pipeline([n for n in pipelines["evaluate_external"].nodes if n.namespace is None])
        if SHARED_OUTPUT not in shared.all_outputs():
            return
        logger.info(
            "Building the external data (%d shared nodes) for the chosen runs first",
            len(shared.nodes),
        )
        SequentialRunner().run(shared, catalog)
