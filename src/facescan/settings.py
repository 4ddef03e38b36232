"""Project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from kedro.config import OmegaConfigLoader

from facescan.context import FacescanContext
from facescan.hooks import ReportRunHook, RunLockHook, StageTimingHook
from facescan.pipeline_registry import CONFIG_LOADER_ARGS
from facescan.pipelines.evaluate_external.hooks import ExternalDataHook

HOOKS = (StageTimingHook(), ReportRunHook(), ExternalDataHook(), RunLockHook())

# Hands the active environment's `ablation` parameters to the pipeline registry when the context is
# built, so that `--env paper` or `--params ablation.seeds=...` decides which variant namespaces
# exist (for every tool, `kedro viz run` included, which disables hooks).
CONTEXT_CLASS = FacescanContext

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = CONFIG_LOADER_ARGS
