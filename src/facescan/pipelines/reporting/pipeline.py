"""The ``reporting`` pipeline: every run's evaluation outputs -> ablation table, plots, report.

Not namespaced: it reads all runs of the configuration. Run alone
(``kedro run --pipelines reporting``) it rebuilds the report from the saved evaluation outputs.
"""

from __future__ import annotations

import warnings

from kedro.pipeline import Node, Pipeline

from facescan.pipelines.binding import bind
from facescan.runs import VariantRun

from .nodes import (
    RUN_INPUTS,
    build_ablation_table,
    build_per_source_table,
    build_robustness_table,
    explain_models,
    gather_results,
    plot_ablation,
    render_ablation_report,
)


def create_pipeline(runs: list[VariantRun]) -> Pipeline:
    """Reporting over ``runs``; empty when there are none."""
    if not runs:
        return Pipeline([])
    keys = tuple((r.namespace, r.variant, r.seed) for r in runs)
    first: dict[str, str] = {}
    for r in runs:  # one run per variant (its first seed) for the class-activation maps
        first.setdefault(r.variant, r.namespace)
    explained = tuple((ns, variant) for variant, ns in first.items())
    gather = bind(gather_results, keys)
    with warnings.catch_warnings():
        # The inputs are the runs' namespaced outputs ("<ns>.metrics"): the dots are Kedro's
        # own namespacing, which its warning about dotted names does not expect here.
        warnings.filterwarnings("ignore", message="One or more dataset names contain")
        gather_node = Node(
            gather,
            inputs=["test_cache"] + [f"{r.namespace}.{kind}" for r in runs for kind in RUN_INPUTS],
            outputs="ablation_results",
            name="gather_results",
        )
    return Pipeline(
        [
            gather_node,
            Node(
                build_ablation_table,
                inputs=["ablation_results", "params:ablation", "params:evaluation"],
                outputs=[
                    "ablation_table",
                    "ablation_table_md",
                    "ablation_remarks",
                    "ablation_runs",
                ],
                name="build_ablation_table",
            ),
            Node(
                build_robustness_table,
                inputs="ablation_results",
                outputs="robustness_table",
                name="build_robustness_table",
            ),
            Node(
                build_per_source_table,
                inputs=["ablation_results", "split_manifest", "params:evaluation"],
                outputs="per_source_table",
                name="build_per_source_table",
            ),
            Node(
                bind(explain_models, explained),
                inputs=[
                    "ablation_results",
                    "test_cache",
                    "params:ablation",
                    "params:evaluation",
                    "params:reporting",
                ]
                + [f"{ns}.model" for ns, _ in explained],
                outputs=["explain_plots", "explain_figures"],
                name="explain_models",
            ),
            Node(
                plot_ablation,
                inputs=["ablation_results", "ablation_table", "robustness_table"],
                outputs=["ablation_plots", "ablation_figures"],
                name="plot_ablation",
            ),
            Node(
                render_ablation_report,
                inputs=[
                    "ablation_results",
                    "ablation_table",
                    "ablation_remarks",
                    "ablation_runs",
                    "robustness_table",
                    "ablation_figures",
                    "split_manifest",
                    "rejected_images",
                    "stage_timings",
                    "parameters",
                    "ablation_report_history",
                    "report_run",
                    "per_source_table",
                    "explain_figures",
                ],
                outputs=["ablation_report", "ablation_report_version"],
                name="render_ablation_report",
            ),
        ]
    )
