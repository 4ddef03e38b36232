"""Kedro hooks of facescan."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from facescan import pipeline_registry

logger = logging.getLogger(__name__)


class AblationRegistryHook:
    """Makes the pipeline registry see the environment chosen with ``--env``.

    Kedro 1.7 creates the context, fires ``after_context_created`` and only then loads the pipelines.
    The variant namespaces of ``training``/``evaluation``/``predict`` come from the active
    environment's ``ablation`` parameters (runtime ``--params`` included), so this hook reads them
    from the config loader (not ``context.params``, which would load the pipelines first) and hands
    them to the registry, invalidating pipelines built for another configuration.
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        params = context.config_loader["parameters"]
        if pipeline_registry.set_ablation_config(params.get("ablation") or {}):
            from kedro.framework.project import pipelines

            pipelines.configure(pipelines._pipelines_module)  # rebuild with the new variants
