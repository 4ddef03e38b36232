"""Project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

from kedro.config import OmegaConfigLoader

from facescan.context import FacescanContext
from facescan.hooks import (
    AblationRegistryHook,
    ReportRunHook,
    StageTimingHook,
    TrainingMachineCheckHook,
)

# Hands the active environment's `ablation` parameters to the pipeline registry before it is read,
# so that `--env paper` or `--params ablation.variants=[...]` decides which variant namespaces exist.
HOOKS = (AblationRegistryHook(), TrainingMachineCheckHook(), StageTimingHook(), ReportRunHook())

# Also hands the `ablation` parameters to the registry when the context is built, for tools that
# create one with every hook disabled (`kedro viz run` without `--include-hooks`).
CONTEXT_CLASS = FacescanContext

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment (or --params a.b=c) overrides one leaf and keeps its siblings.
    "merge_strategy": {"parameters": "soft"},
}
