"""The project's Kedro context: hands the active ``ablation`` parameters to the pipeline registry."""

from __future__ import annotations

from typing import Any

from kedro.framework.context import KedroContext

from facescan import pipeline_registry


def hand_ablation_to_registry(config_loader: Any) -> None:
    """Give the registry the environment's ``ablation`` parameters; rebuild pipelines if they changed.

    Reads the config loader (``--env`` and runtime ``--params`` included), not ``context.params``,
    which validates parameters against the pipelines and would load them first.
    """
    params = config_loader["parameters"]
    if pipeline_registry.set_ablation_config(params.get("ablation") or {}):
        from kedro.framework.project import pipelines

        pipelines.configure(pipelines._pipelines_module)  # rebuild with the new variants


class FacescanContext(KedroContext):
    """``KedroContext`` whose creation makes the pipeline registry follow ``--env`` and ``--params``.

    :class:`facescan.hooks.AblationRegistryHook` does the same from ``after_context_created``, but
    some tools create a context with every hook disabled: ``kedro viz run`` does unless given
    ``--include-hooks``, and then drew the variant namespaces of ``conf/base`` whatever ``--env``
    said. Doing it when the context is built covers them; the hook then finds nothing changed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hand_ablation_to_registry(self.config_loader)
