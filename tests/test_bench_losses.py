"""tools/bench_losses.py's zoo table: every registered loss has a reference that computes the same value,
and the verdicts follow the budget (timings themselves are not tested: they depend on the machine)."""
import importlib.util
import pathlib

import pytest
import torch

BENCH = pathlib.Path(__file__).resolve().parents[1] / "tools" / "bench_losses.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_losses", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(bench):
    features, targets, weight = bench.make_batch(8, 16, 4, 10, seed=0)
    torch.manual_seed(0)
    return bench.zoo_rows(bench.zoo_config(10, 16), bench.zoo_inputs(features, targets, weight), torch.device("cpu"))


def test_every_registered_loss_has_a_reference(rows):
    from fastreid_ewth.modeling import registered_losses

    assert [r for r in rows if "missing" in r] == []
    assert {r["name"] for r in rows} == set(registered_losses())


def test_each_timed_call_runs(rows):
    for row in rows:
        row["ours"]()
        row["ref"]()


def _same(rows, name):
    return [r["same"] for r in rows if r["name"] == name]


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "FocalLoss", "TripletLoss", "CircleLoss", "Cosface",
                                  "NPairsLoss", "HistogramLoss", "ContrastiveLoss", "SphereFaceLoss",
                                  "CosFaceLoss", "ArcFaceLoss", "CenterLoss", "MultiSimilarityLoss"])
def test_the_reference_computes_the_entrys_value(rows, name):
    assert _same(rows, name) == [True]


def test_ewth_is_compared_with_trihard_and_with_its_core(rows):
    assert _same(rows, "EWTHLoss") == [True, True]  # its TH variant is TriHard


def test_verdicts_follow_the_budget(bench):
    rows = [{"name": "A", "key": "ref0:A", "reference": "a", "same": True},
            {"name": "B", "key": "ref0:B", "reference": "b", "same": True},
            {"name": "C", "key": "ref0:C", "reference": "c", "same": False},
            {"name": "D", "missing": "no reference"}]
    times = {"ours:A": [1.4, 1.0, 9.0], "ref0:A": [1.0, 1.0, 1.0],  # median of per-round ratios: 1.4
             "ours:B": [1.6, 1.6, 0.1], "ref0:B": [1.0, 1.0, 1.0],  # 1.6, though the best round is fast
             "ours:C": [1.0], "ref0:C": [1.0]}
    verdicts = {r["name"]: r["verdict"] for r in bench.zoo_verdicts(rows, times, budget=1.5)}
    assert verdicts == {"A": "PASS", "B": "FAIL", "C": "FAIL", "D": "FAIL"}
