"""The pipeline registry sees the environment chosen with --env and runtime --params."""

from __future__ import annotations

import pytest

from facescan.runs import VariantRun, expand_runs


def test_expand_runs_one_seed_uses_variant_as_namespace() -> None:
    runs = expand_runs({"variants": ["resnet50", "vit"], "seeds": [3]})
    assert runs == [VariantRun("resnet50", "resnet50", 3), VariantRun("vit", "vit", 3)]


def test_expand_runs_several_seeds_make_one_namespace_each() -> None:
    runs = expand_runs({"variants": ["resnet50"], "seeds": [1, 2]})
    assert [r.namespace for r in runs] == ["resnet50_seed1", "resnet50_seed2"]
    assert {r.variant for r in runs} == {"resnet50"}


@pytest.mark.parametrize(
    ("ablation", "message"),
    [
        ({"variants": ["res net"]}, "ablation.variants"),
        ({"variants": ["vit", "vit"]}, "twice"),
        ({"variants": ["vit"], "seeds": ["x"]}, "ablation.seeds"),
    ],
)
def test_expand_runs_rejects_bad_config(ablation: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_runs(ablation)
