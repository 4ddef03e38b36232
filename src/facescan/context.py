"""The project's Kedro context: hands the active ``ablation`` parameters to the pipeline registry."""

from __future__ import annotations

from typing import Any

from kedro.framework.context import KedroContext

from facescan import pipeline_registry


class FacescanContext(KedroContext):
    """``KedroContext`` whose creation makes the pipeline registry follow ``--env`` and ``--params``.

    Kedro 1.7 builds the context before it loads the pipelines; the variant namespaces come from
    the environment's ``ablation`` parameters (runtime ``--params`` included), read here from the
    config loader (not ``context.params``, which validates parameters against the pipelines and
    would load them first). Pipelines built for another configuration are rebuilt. Every tool that
    makes a context goes through here, hooks or not (``kedro viz run`` disables them by default).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ablation = self.config_loader["parameters"].get("ablation") or {}
        if pipeline_registry.use_ablation(ablation):
            from kedro.framework.project import pipelines

            pipelines.configure(pipelines._pipelines_module)  # rebuild with the new variants
