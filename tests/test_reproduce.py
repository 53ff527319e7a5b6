"""tools/reproduce.py: the published tables (the paper's and the loss zoo's two codebases'), run state, report,
plots, paired differences, resume after a kill, and the training diagnostics (a slow loop for the function,
metrics.json for the real runs)."""
import csv
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from fastreid_ewth.losses import diagnostic_values, ewth_loss
from fastreid_ewth.reproduce import cli, report, runner
from fastreid_ewth.reproduce.metrics import final_evaluation, read_metrics
from fastreid_ewth.reproduce.paper import PAPER_CONFIGS, PAPER_DATASETS, PaperResult, paper_result, paper_table
from fastreid_ewth.reproduce.presets import PRESETS, ZOO_BOT, ZOO_PLAIN
from fastreid_ewth.reproduce.runner import run_state

from conftest import REPO

REPRODUCE = str(REPO / "tools" / "reproduce.py")
CONFIGS = [str(REPO / "projects" / "BoT_TH.yml"), str(REPO / "projects" / "BoT_HNEWTH.yml")]
# ResNet-18 from scratch at 16×8 on the SynthReID slice (2 steps of 64 images per epoch): a training step costs
# little more than its data loading. Four epochs with a checkpoint after each, so a run can be killed after its
# first checkpoint with three epochs to spare; one evaluation, at the end.
TINY_EPOCHS = 4
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
        "MODEL.BACKBONE.PRETRAIN", "False", "INPUT.SIZE_TRAIN", "[16,8]", "INPUT.SIZE_TEST", "[16,8]",
        "INPUT.PADDING.SIZE", "2", "INPUT.REA.ENABLED", "False", "SOLVER.MAX_EPOCH", str(TINY_EPOCHS),
        "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.STEPS", "[1]", "SOLVER.CHECKPOINT_PERIOD", "1",
        "TEST.EVAL_PERIOD", str(TINY_EPOCHS), "DATALOADER.NUM_WORKERS", "0", "SEED", "0"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------------
# diagnostics: those the loss computes from its own mining against a loop over anchors (docs/losses.md)
# --------------------------------------------------------------------------------------------------------
def _slow_diagnostics(features, targets, weight, margin, threshold, norm_feat):
    f = features.double()
    if norm_feat == "l2":
        f = f / f.norm(dim=1, keepdim=True)
    elif norm_feat == "max":
        f = f / f.norm(dim=1).max()
    n = f.shape[0]
    y = targets.tolist()

    def d(i, j):
        return math.sqrt(max(float(((f[i] - f[j]) ** 2).sum()), 1e-12))

    active, d_aps, d_ans, kept = [], [], [], []
    for i in range(n):
        positives = [j for j in range(n) if y[j] == y[i]]
        negatives = [j for j in range(n) if y[j] != y[i]]
        if len(positives) < 2 or not negatives:
            continue
        d_ap = max(d(i, j) for j in positives)
        neg = min(negatives, key=lambda j: d(i, j))
        d_an = d(i, neg)
        opened = d_ap - d_an + margin > 0 if margin > 0 else d_ap > d_an
        active.append(1.0 if opened else 0.0)
        d_aps.append(d_ap)
        d_ans.append(d_an)
        delta = (weight[y[i]].double() - weight[y[neg]].double()).abs()
        delta_hat = delta / (delta.max() + 1e-12)
        kept.append(float((delta_hat >= threshold).double().mean()))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {"hinge_active": mean(active), "d_ap": mean(d_aps), "d_an": mean(d_ans), "ew_kept": mean(kept)}


@pytest.mark.parametrize("norm_feat,margin", [("none", 0.3), ("l2", 0.3), ("max", 0.0), ("none", 5.0)])
def test_diagnostics_match_a_slow_loop(norm_feat, margin):
    gen = torch.Generator().manual_seed(3)
    # 5 identities with 4, 4, 3, 2 images and one singleton (it forms no triplet: left out of every mean)
    targets = torch.tensor([0] * 4 + [1] * 4 + [2] * 3 + [3] * 2 + [4])
    features = torch.randn(targets.numel(), 16, generator=gen) * 0.5
    features[4:8] += 0.8  # identity 1 near identity 0: a mix of open and closed hinges
    weight = torch.randn(5, 16, generator=gen)
    _, got = ewth_loss(features, targets, weight, variant="HNEWTH", margin=margin, ew_threshold=0.3,
                       norm_feat=norm_feat, diagnostics=True)
    want = _slow_diagnostics(features, targets, weight, margin, 0.3, norm_feat)
    assert set(got) == {"hinge_active", "d_ap", "d_an", "ew_kept"}
    for name, value in want.items():
        assert float(got[name]) == pytest.approx(value, rel=1e-5, abs=1e-6), name
    if margin == 5.0:
        assert float(got["hinge_active"]) == 1.0  # a margin wider than any distance gap opens every hinge
    # 13 qualifying anchors: shares are multiples of 1/13
    assert float(got["hinge_active"]) * 13 == pytest.approx(round(float(got["hinge_active"]) * 13), abs=1e-4)


def test_diagnostics_are_detached_and_skip_batches_without_triplets():
    features = torch.randn(6, 8, requires_grad=True)
    _, stats = ewth_loss(features, torch.tensor([0, 0, 1, 1, 2, 2]), None, variant="HNTH", diagnostics=True)
    assert set(stats) == {"hinge_active", "d_ap", "d_an"}  # no ew_kept without the EW term
    assert not any(v.requires_grad for v in stats.values())
    assert set(diagnostic_values(stats)) == set(stats)
    _, singletons = ewth_loss(features, torch.arange(6), None, variant="TH", diagnostics=True)
    assert diagnostic_values(singletons) == {}  # all singletons: nothing to average, nothing logged
    with pytest.raises(ValueError, match="classifier weight"):
        ewth_loss(features, torch.tensor([0, 0, 1, 1, 2, 2]), None, variant="EWTH", diagnostics=True)


def _tiny_model(variant):
    from fastreid.config import get_cfg

    from fastreid_ewth import add_ewth_config
    from fastreid_ewth.engine import EWTHTrainer

    cfg = add_ewth_config(get_cfg())
    cfg.merge_from_file(str(REPO / "projects" / "Demo.yml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", 3, "MODEL.LOSSES.EWTH.VARIANT", variant])
    torch.manual_seed(0)
    return EWTHTrainer.build_model(cfg).train()


@pytest.mark.parametrize("variant,terms", [("TH", {"loss_cls", "loss_triplet"}),
                                           ("HNEWTH", {"loss_cls", "loss_triplet", "loss_mean_neg", "loss_ew"})])
def test_model_puts_diagnostics_into_the_event_storage(variant, terms):
    from fastreid.utils.events import EventStorage

    model = _tiny_model(variant)
    data = {"images": torch.rand(9, 3, 64, 32) * 255, "targets": torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])}
    with EventStorage(0) as storage:
        losses = model(data)
        logged = {k: v for k, (v, _) in storage.latest().items() if k.startswith("diag/")}
    assert set(losses) == terms  # diagnostics stay out of the loss dict
    expected = {"diag/hinge_active", "diag/d_ap", "diag/d_an"} | ({"diag/ew_kept"} if "loss_ew" in terms else set())
    assert set(logged) == expected
    assert 0.0 <= logged["diag/hinge_active"] <= 1.0 and logged["diag/d_ap"] > 0 and logged["diag/d_an"] > 0
    if "diag/ew_kept" in logged:
        assert 0.0 < logged["diag/ew_kept"] <= 1.0


# --------------------------------------------------------------------------------------------------------
# the paper's table, run state, command lines
# --------------------------------------------------------------------------------------------------------
def test_paper_table_matches_the_readme_and_stores_the_typo_row_as_ewth():
    rows = re.findall(r"^\| `projects/(\w+)\.yml`[^|]*\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|",
                      (REPO / "README.md").read_text(), flags=re.M)
    assert len(rows) == 16
    for config, m_map, m_r1, d_map, d_r1 in rows:
        assert paper_result(config, "Market1501")[1:3] == (float(m_map), float(m_r1))
        assert paper_result("projects/{}.yml".format(config), "DukeMTMC")[1:3] == (float(d_map), float(d_r1))
        assert paper_result(config, "DukeMTMC").source == "EWTH paper (NeurIPS 2020)"
    assert sum(r.source == "EWTH paper (NeurIPS 2020)" for r in paper_table().values()) == 32
    assert len(PAPER_CONFIGS) == 16
    assert paper_result("BoT_EWTH", "Market1501").method == "BoT+EWTH"
    assert paper_result("BoT_HNEWTH", "Market1501").mAP == 88.4
    assert paper_result("BoT_TH", "SynthReID") is None


EWTH_CONFIGS = ("BoT_TH", "BoT_TH_FN", "BoT_HTH", "BoT_HNTH", "BoT_EWTH", "BoT_NEWTH", "BoT_HEWTH", "BoT_HNEWTH",
                "AGW_TH", "AGW_TH_FN", "AGW_HTH", "AGW_HNTH", "AGW_EWTH", "AGW_NEWTH", "AGW_HEWTH", "AGW_HNEWTH")
TORCHREID = "torchreid loss comparison"
BOT_CODEBASE = "BoT-style simple codebase"


def test_paper_table_holds_the_loss_zoo_codebases_and_the_paper_configs_stay_the_papers():
    table = paper_table()
    by_source = {}
    for (config, dataset), result in table.items():
        by_source.setdefault(result.source, set()).add((config, dataset))
    assert set(by_source) == {"EWTH paper (NeurIPS 2020)", TORCHREID, BOT_CODEBASE}
    assert len(table) == 32 + 24 + 20
    # every zoo config (a file in projects/zoo/) has numbers from exactly its codebase, on that codebase's datasets
    zoo_files = sorted(p.stem for p in (REPO / "projects" / "zoo").glob("*.yml"))
    assert zoo_files == sorted(ZOO_PLAIN + ZOO_BOT) and len(zoo_files) == 22
    assert by_source[TORCHREID] == {(c, d) for c in ZOO_PLAIN for d in ("Market1501", "DukeMTMC")}
    assert by_source[BOT_CODEBASE] == {(c, d) for c in ZOO_BOT for d in ("Market1501", "MSMT17")}
    # a few rows, as the two publications print them (rank-1 / mAP there; mAP first here)
    assert paper_result(str(REPO / "projects" / "zoo" / "Plain_SoftmaxTriplet.yml"), "Market1501") == PaperResult(
        "Softmax+Triplet loss", 66.8, 83.7, TORCHREID)
    assert paper_result("Plain_SphereFaceM4", "DukeMTMC") == PaperResult("Sphereface (margin=4)", 58.1, 76.0, TORCHREID)
    assert paper_result("projects/zoo/Plain_MultiSimilarity.yml", "Market1501")[1:3] == (55.9, 72.8)
    assert paper_result("projects/zoo/BoT_CELS_Contrastive.yml", "MSMT17") == PaperResult(
        "CELabelSmooth + Contrastive", 58.7, 80.3, BOT_CODEBASE)
    assert paper_result("BoT_Circle_Circle", "Market1501") == PaperResult("Circle + Circle", 87.3, 94.7, BOT_CODEBASE)
    assert paper_result("BoT_CE_Triplet", "DukeMTMC") is None and paper_result("Plain_Softmax", "MSMT17") is None
    # the paper's runs (no --configs) are still its 16, in its order, on its two datasets
    assert PAPER_CONFIGS == EWTH_CONFIGS
    assert PAPER_DATASETS == ("Market1501", "DukeMTMC")


def _report_rows(path):
    with open(path) as f:
        return {row["config"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("how", ["configs", "preset"])
def test_report_only_on_zoo_configs_without_runs_lists_both_codebases_numbers(tmp_path, how):
    out = tmp_path / "out"
    zoo = REPO / "projects" / "zoo"
    if how == "configs":
        argv = ["--configs", *sorted(str(p) for p in zoo.glob("*.yml"))]
    else:
        argv = ["--preset", "zoo", "--projects", str(REPO / "projects")]
    lines = []
    assert cli.main(argv + ["--report-only", "--datasets", "Market1501", "--output", str(out)],
                    echo=lines.append) == 0
    rows = _report_rows(out / "report.csv")
    assert set(rows) == set(ZOO_PLAIN + ZOO_BOT)
    assert {row["status"] for row in rows.values()} == {"not run"}  # with 3 seeds too, when none has started
    assert {row["dataset"] for row in rows.values()} == {"Market1501"}
    for config, source, method, m_map, m_r1 in (
            ("Plain_Softmax", TORCHREID, "Softmax", "64.6000", "82.3000"),
            ("Plain_ArcFace", TORCHREID, "Arcface", "65.0000", "85.1000"),
            ("BoT_CE_Triplet", BOT_CODEBASE, "CrossEntropy + Triplet", "86.6000", "94.5000"),
            ("BoT_CosFace_Triplet", BOT_CODEBASE, "Cosface + Triplet", "86.7000", "95.1000")):
        row = rows[config]
        assert (row["source"], row["published_method"], row["paper_mAP"], row["paper_R1"]) == (
            source, method, m_map, m_r1), row
        assert row["mAP"] == "" and row["diff_mAP"] == "" and row["finished"] == "0"
    printed = "\n".join(lines)
    assert "| `Plain_Softmax` | torchreid loss comparison | Softmax | 64.6 | 82.3 | – |" in printed
    assert "| `BoT_Circle_Circle` | BoT-style simple codebase | Circle + Circle | 87.3 | 94.7 | – |" in printed
    assert "published mAP" in printed and "paper mAP" not in printed
    assert not (out / "Market1501").exists()  # nothing was trained or created for the runs
    assert (out / "map_vs_paper.png").read_bytes()[:8] == PNG_SIGNATURE


def _fake_finished_run(spec, mAP, rank1):
    """A run folder as a finished training leaves it, with ``mAP`` / ``rank1`` as its last evaluation."""
    run = spec.output_dir
    os.makedirs(run)
    with open(os.path.join(run, "model_final.pth"), "wb"):
        pass
    with open(os.path.join(run, runner.MARKER), "w") as f:
        json.dump({"wall_time_s": 60.0}, f)
    with open(os.path.join(run, "metrics.json"), "w") as f:
        f.write(json.dumps({"iteration": 9, "loss_cls": 3.0}) + "\n")
        f.write(json.dumps({"iteration": 19, "mAP": mAP, "Rank-1": rank1, "mINP": mAP / 2}) + "\n")


def _paired_rows(lines):
    """The paired-differences table -> {(config, baseline): (Δ mAP, Δ R1, seeds)}."""
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| SynthReID |"):
            rows[(cells[1].strip("`"), cells[2].strip("`"))] = tuple(cells[3:])
    return rows


def _specs(tmp_path, preset):
    args = cli.build_parser().parse_args(["--preset", preset, "--projects", str(REPO / "projects"),
                                          "--output", str(tmp_path / preset)])
    specs, _, _ = cli.build_specs(args)
    return {(s.name, s.seed): s for s in specs}, specs


def test_paired_differences_use_the_presets_baselines_by_group(tmp_path):
    by_run, specs = _specs(tmp_path, "zoo")
    finished = {
        # the plain group's baseline, then two of its configs (Plain_Triplet: seed 1 only, seed 0 interrupted)
        ("Plain_SoftmaxTriplet", 0): (50.0, 40.0), ("Plain_SoftmaxTriplet", 1): (52.0, 41.0),
        ("Plain_SoftmaxTriplet", 2): (54.0, 45.0),
        ("Plain_Softmax", 0): (53.0, 40.5), ("Plain_Softmax", 1): (53.0, 44.0), ("Plain_Softmax", 2): (58.0, 45.0),
        ("Plain_Triplet", 1): (49.5, 38.0),
        # the BoT group's baseline without seed 2, and one of its configs with all three
        ("BoT_CE_Triplet", 0): (70.0, 60.0), ("BoT_CE_Triplet", 1): (71.0, 62.0),
        ("BoT_Circle_Circle", 0): (72.0, 59.0), ("BoT_Circle_Circle", 1): (75.0, 63.0),
        ("BoT_Circle_Circle", 2): (99.0, 99.0),
    }
    for key, (m, r1) in finished.items():
        _fake_finished_run(by_run[key], m, r1)
    interrupted = by_run[("Plain_Triplet", 0)].output_dir
    os.makedirs(interrupted)
    with open(os.path.join(interrupted, "last_checkpoint"), "w") as f:
        f.write("model_0000.pth")

    results = report.collect(specs)
    lines = cli._paired_differences(results, PRESETS["zoo"])
    rows = _paired_rows(lines)
    # one row per compared config, each against its own group's baseline; the baselines are no rows of their own
    assert set(rows) == ({(n, "Plain_SoftmaxTriplet") for n in ZOO_PLAIN if n != "Plain_SoftmaxTriplet"}
                         | {(n, "BoT_CE_Triplet") for n in ZOO_BOT if n != "BoT_CE_Triplet"})
    # by hand: Δ mAP 3, 1, 4 -> mean 2.67, sd 1.53; Δ R1 0.5, 3, 0 -> mean 1.17, sd 1.61
    assert rows[("Plain_Softmax", "Plain_SoftmaxTriplet")] == ("+2.7 ± 1.5", "+1.2 ± 1.6", "3")
    assert rows[("Plain_Triplet", "Plain_SoftmaxTriplet")] == ("-2.5", "-3.0", "1")  # 49.5 − 52, 38 − 41
    # seeds 0 and 1 only (the baseline has no seed 2): Δ mAP 2, 4 -> 3 ± 1.41; Δ R1 −1, 1 -> 0 ± 1.41
    assert rows[("BoT_Circle_Circle", "BoT_CE_Triplet")] == ("+3.0 ± 1.4", "+0.0 ± 1.4", "2")
    assert rows[("BoT_CE_Contrastive", "BoT_CE_Triplet")] == ("–", "–", "0")
    assert "`Plain_SoftmaxTriplet` for 11 configs" in lines[0] and "`BoT_CE_Triplet` for 9 configs" in lines[0]

    # the report's rows: measured means against the row's own source
    report.write_report(results, str(tmp_path / "report"))
    rows = _report_rows(tmp_path / "report" / "report.csv")
    assert rows["Plain_Softmax"]["status"] == "3/3 finished" and rows["Plain_Softmax"]["mAP"] == "54.6667"
    assert rows["Plain_Triplet"]["status"] == "1/3 finished"
    assert rows["BoT_CE_Contrastive"]["status"] == "not run"
    assert all(row["paper_mAP"] == "" and row["source"] == "" for row in rows.values())  # SynthReID: none


def test_paired_differences_without_baselines_compare_with_the_first_config(tmp_path):
    preset = PRESETS["synth"]
    assert preset.baselines == ()
    by_run, specs = _specs(tmp_path, "synth")
    for seed, th, hnewth in ((0, (50.0, 40.0), (48.0, 41.0)), (1, (52.0, 42.0), (49.0, 40.0)),
                             (2, (51.0, 41.0), (51.0, 44.0))):
        _fake_finished_run(by_run[("TH", seed)], *th)
        _fake_finished_run(by_run[("HNEWTH", seed)], *hnewth)
    lines = cli._paired_differences(report.collect(specs), preset)
    # by hand: Δ mAP −2, −3, 0 -> mean −1.67, sd 1.53; Δ R1 1, −2, 3 -> mean 0.67, sd 2.52
    assert _paired_rows(lines) == {("HNEWTH", "TH"): ("-1.7 ± 1.5", "+0.7 ± 2.5", "3")}
    assert lines[0].startswith("Each variant minus `TH`")
    with pytest.raises(ValueError, match="NoSuch"):
        cli._paired_differences([], preset._replace(baselines=(("NoSuch", ("TH",)),)))


def test_run_state_follows_marker_checkpoint_and_final_model(tmp_path):
    run = tmp_path / "run"
    assert run_state(str(run)) == "fresh"
    run.mkdir()
    (run / "last_checkpoint").write_text("model_0000.pth")
    assert run_state(str(run)) == "interrupted"
    (run / runner.MARKER).write_text("{}")
    assert run_state(str(run)) == "interrupted"  # a marker without model_final.pth is not a finished run
    (run / "model_final.pth").write_bytes(b"")
    assert run_state(str(run)) == "finished"
    (run / runner.MARKER).unlink()
    assert run_state(str(run)) == "unmarked"


def test_a_run_trained_elsewhere_is_adopted_without_training(tmp_path, monkeypatch):
    def no_launch(*args, **kwargs):
        raise AssertionError("launched a run that had finished: {}".format(args))

    monkeypatch.setattr(runner.subprocess, "Popen", no_launch)
    run = tmp_path / "Market1501" / "BoT_TH"
    run.mkdir(parents=True)
    (run / "model_final.pth").write_bytes(b"")  # e.g. trained from the --dry-run commands on a cluster
    spec = runner.RunSpec("BoT_TH", CONFIGS[0], "Market1501", str(run))
    assert runner.train_run(spec, echo=lambda _: None) == ("unmarked", 0)
    assert run_state(str(run)) == "finished"
    assert json.loads((run / runner.MARKER).read_text())["wall_time_s"] is None  # unknown, not made up


def test_a_run_still_training_is_left_alone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last_checkpoint").write_text("model_0000.pth")
    ended = subprocess.Popen(["true"])
    ended.wait()  # ended and reaped: nothing runs under its pid any more
    for pid, state in ((os.getpid(), "running"), (ended.pid, "interrupted")):
        (run / runner.ATTEMPTS).write_text(json.dumps(
            {"event": "start", "attempt": 1, "time": time.time(), "pid": pid, "host": socket.gethostname()}) + "\n")
        assert run_state(str(run)) == state


def test_dry_run_prints_one_command_per_run_and_resumes_interrupted_ones(tmp_path):
    out = tmp_path / "out"
    interrupted = out / "DukeMTMC" / "BoT_HNEWTH"
    interrupted.mkdir(parents=True)
    (interrupted / "last_checkpoint").write_text("model_0009.pth")
    lines = []
    code = cli.main(["--configs", *CONFIGS, "--output", str(out), "--num-gpus", "4", "--dry-run",
                     "--opts", "SOLVER.IMS_PER_BATCH", "256"], echo=lines.append)
    assert code == 0 and len(lines) == 4  # 2 configs × the paper's 2 datasets
    assert all("--num-gpus 4" in line and line.endswith("SOLVER.IMS_PER_BATCH 256") for line in lines)
    resumed = [line for line in lines if "--resume" in line]
    assert len(resumed) == 1 and "OUTPUT_DIR {}".format(interrupted) in resumed[0]
    assert "DATASETS.NAMES '(\"DukeMTMC\",)' DATASETS.TESTS '(\"DukeMTMC\",)'" in resumed[0]
    assert not (out / "Market1501").exists()  # a dry run creates nothing
    # each command is the installed training module run by this interpreter: runnable without a checkout
    assert all(line.startswith("{} -m fastreid_ewth.train --config-file ".format(sys.executable)) for line in lines)


def test_default_configs_are_read_from_the_current_folder_not_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # a checkout's root: projects/ is there
    lines = []
    assert cli.main(["--datasets", "SynthReID", "--output", str(tmp_path / "out"), "--dry-run"],
                    echo=lines.append) == 0
    assert len(lines) == 16 and "--config-file projects/BoT_TH.yml " in lines[0]
    assert cli.main(["--preset", "synth", "--output", str(tmp_path / "synth"), "--dry-run"], echo=lines.append) == 0
    assert "--config-file projects/Demo.yml " in lines[-1]

    monkeypatch.chdir(tmp_path)  # anywhere else: say what to pass
    for argv in (["--dry-run"], ["--preset", "synth", "--dry-run"]):
        with pytest.raises(SystemExit) as error:
            cli.main(argv)
        message = str(error.value)
        assert "not found" in message and "--projects /path/to/fastreid_ewth/projects" in message, message
        assert str(tmp_path / "projects") in message
    lines = []
    assert cli.main(["--projects", str(REPO / "projects"), "--preset", "synth", "--output", "synth", "--dry-run"],
                    echo=lines.append) == 0
    assert len(lines) == 6 and "--config-file {} ".format(REPO / "projects" / "Demo.yml") in lines[0]


def test_opts_that_would_misdirect_runs_are_rejected(tmp_path):
    with pytest.raises(SystemExit, match="may not set OUTPUT_DIR"):
        cli.main(["--configs", CONFIGS[0], "--dry-run", "--opts", "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(SystemExit, match="odd number"):
        cli.main(["--configs", CONFIGS[0], "--dry-run", "--opts", "SOLVER.MAX_EPOCH"])
    with pytest.raises(SystemExit, match="not found"):
        cli.main(["--configs", "projects/NoSuch.yml", "--dry-run"])


def test_metrics_of_a_resumed_run_read_as_one_history(tmp_path):
    lines = [{"iteration": i, "loss_cls": 10.0 - i} for i in range(6)]  # first attempt, killed after 5
    lines += [{"iteration": i, "loss_cls": 100.0 + i} for i in range(3, 8)]  # resumed from iteration 3
    text = "\n".join(json.dumps(r) for r in lines) + '\n{"iteration": 8, "loss_c'  # torn by the kill
    (tmp_path / "metrics.json").write_text(text)
    records = read_metrics(str(tmp_path / "metrics.json"))
    assert [r["iteration"] for r in records] == list(range(8))
    assert [r["loss_cls"] for r in records] == [10.0, 9.0, 8.0, 103.0, 104.0, 105.0, 106.0, 107.0]


def test_final_evaluation_comes_from_the_log_when_metrics_json_lacks_it(tmp_path):
    records = [{"iteration": 22, "mAP": 9.19, "Rank-1": 8.0, "mINP": 4.3}, {"iteration": 45, "loss_cls": 4.9}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    table = ("| Dataset   | Rank-1   | Rank-5   | mAP   | mINP   | metric   |\n"
             "|:----------|:---------|:---------|:------|:-------|:---------|\n"
             "| SynthReID | {:.2f}     | 25.00    | {:.2f} | {:.2f}   | 8.59     |\n")
    (tmp_path / "log.txt").write_text("[x] evaluation:\n" + table.format(8.0, 9.19, 4.33) + "[x] more\n"
                                      + table.format(9.5, 10.74, 5.54) + "[x] done\n")
    final = final_evaluation(str(tmp_path), "SynthReID")
    assert final.source == "log.txt" and final.iteration == 45
    assert final.values == {"mAP": 10.74, "Rank-1": 9.5, "mINP": 5.54}
    records.append({"iteration": 46, "SynthReID/mAP": 11.0, "SynthReID/Rank-1": 10.0, "SynthReID/mINP": 6.0})
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    final = final_evaluation(str(tmp_path), "SynthReID")
    assert final.source == "metrics.json" and final.values == {"mAP": 11.0, "Rank-1": 10.0, "mINP": 6.0}


# --------------------------------------------------------------------------------------------------------
# the runner for real: two configs on SynthReID, the second killed after its first checkpoint
# --------------------------------------------------------------------------------------------------------
def _last_results_table(log):
    """The last results table fastreid printed: {column: value as printed}."""
    header = [line for line in log.splitlines() if line.startswith("| Dataset")]
    row = [line for line in log.splitlines() if line.startswith("| SynthReID")]
    assert header and row, log[-3000:]
    names = [c.strip() for c in header[-1].strip("|").split("|")]
    return dict(zip(names, [c.strip() for c in row[-1].strip("|").split("|")]))


def _argv(out):
    return ["--configs", *CONFIGS, "--datasets", "SynthReID", "--output", str(out), "--opts", *TINY]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, small_root):
    out = tmp_path_factory.mktemp("reproduce")
    killed_run = out / "SynthReID" / "BoT_HNEWTH"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTREID_DATASETS", str(small_root))
        # one intra-op thread per training: on a shared 2-core machine two threads mostly wait for each other
        mp.setenv("OMP_NUM_THREADS", "1")
        with open(out / "first_invocation.log", "w") as log:
            first = subprocess.Popen([sys.executable, REPRODUCE, *_argv(out)], cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            try:
                deadline = time.time() + 900
                # after epoch 1's checkpoint and its metrics.json record (written after the checkpoint: a kill
                # between the two would leave the epoch without its record), i.e. during epoch 2 (of TINY_EPOCHS)
                while not ((killed_run / "last_checkpoint").exists() and (killed_run / "metrics.json").exists()
                           and (killed_run / "metrics.json").stat().st_size > 0):
                    assert first.poll() is None, (out / "first_invocation.log").read_text()[-3000:]
                    assert time.time() < deadline, "no checkpoint after 15 minutes"
                    time.sleep(0.1)
                first_checkpoint = killed_run / "model_0000.pth"
                checkpoint_mtime = first_checkpoint.stat().st_mtime
                os.killpg(first.pid, signal.SIGKILL)  # the runner and its training process, mid-epoch 2
            finally:
                if first.poll() is None:
                    os.killpg(first.pid, signal.SIGKILL)
                first.wait()
        deadline = time.time() + 60
        while run_state(str(killed_run)) == "running" and time.time() < deadline:
            time.sleep(0.1)  # SIGKILL is delivered asynchronously: give the orphaned trainer time to die
        assert run_state(str(killed_run)) == "interrupted"
        assert run_state(str(out / "SynthReID" / "BoT_TH")) == "finished"
        second = []
        code = cli.main(_argv(out), echo=second.append)
    return {"out": out, "code": code, "second": second, "checkpoint_mtime": checkpoint_mtime}


@pytest.mark.heavy
def test_report_has_the_papers_and_the_measured_columns(reproduced):
    out = reproduced["out"]
    assert reproduced["code"] == 0, "\n".join(reproduced["second"])
    with open(out / "report.csv") as f:
        rows = {row["config"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"BoT_TH", "BoT_HNEWTH"}
    for config, row in rows.items():
        assert {"paper_mAP", "paper_R1", "mAP", "R1", "mINP", "diff_mAP", "diff_R1", "wall_time_s"} <= set(row)
        assert row["dataset"] == "SynthReID" and row["paper_mAP"] == "" and row["diff_mAP"] == ""
        # the measured numbers are the run's final results table (fastreid prints it to 2 decimals)
        values = _last_results_table((out / "SynthReID" / config / "log.txt").read_text())
        for ours, theirs in (("mAP", "mAP"), ("R1", "Rank-1"), ("mINP", "mINP")):
            assert float(row[ours]) == pytest.approx(float(values[theirs]), abs=0.006)
            assert 0.0 <= float(row[ours]) <= 100.0
        assert float(row["wall_time_s"]) > 1.0
    report = (out / "REPORT.md").read_text()
    assert ("| config | source | published as | published mAP | published R1 | mAP | R1 | mINP | Δ mAP | Δ R1 |"
            in report)
    assert "`BoT_TH`" in report and "`BoT_HNEWTH`" in report and "map_vs_paper.png" in report


@pytest.mark.heavy
def test_plots_are_valid_pngs(reproduced):
    import matplotlib.image

    out = reproduced["out"]
    plots = [out / "map_vs_paper.png", out / "curves" / "SynthReID" / "BoT_TH.png",
             out / "curves" / "SynthReID" / "BoT_HNEWTH.png"]
    for path in plots:
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        image = matplotlib.image.imread(str(path))
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert float(image[..., :3].std()) > 0.01  # something was drawn


@pytest.mark.heavy
def test_interrupted_run_is_resumed_not_restarted(reproduced):
    out = reproduced["out"]
    run = out / "SynthReID" / "BoT_HNEWTH"
    assert any("BoT_HNEWTH: interrupted, resuming" in line for line in reproduced["second"])
    assert any("BoT_TH: finished, skipped" in line for line in reproduced["second"])
    marker = json.loads((run / runner.MARKER).read_text())
    assert marker["attempts"] == 2 and marker["resumed"] is True and "--resume" in marker["command"]
    # a restart would have trained epoch 1 again and rewritten its checkpoint
    assert (run / "model_0000.pth").stat().st_mtime == reproduced["checkpoint_mtime"]
    log = (run / "log.txt").read_text()
    # killed within a poll (0.1 s) of epoch 1's checkpoint: resumed from it (or, on a starved machine, a later one)
    assert "Starting training from epoch 0" in log and re.search(r"Starting training from epoch [1-3]\b", log)
    assert (run / "model_final.pth").is_file()
    iterations = [r["iteration"] for r in read_metrics(str(run / "metrics.json"))]
    # every epoch logged (the last step of each, at least)
    per_epoch = (iterations[-1] + 1) // TINY_EPOCHS
    assert iterations == sorted(iterations) and iterations[-1] + 1 == TINY_EPOCHS * per_epoch
    assert {per_epoch * (e + 1) - 1 for e in range(TINY_EPOCHS)} <= set(iterations)
    # the killed attempt's time counts: the wall time is more than the resumed attempt alone
    attempts = [json.loads(line) for line in (run / runner.ATTEMPTS).read_text().splitlines()]
    assert [a["event"] for a in attempts] == ["start", "lost", "start", "end"]
    resumed_alone = attempts[3]["time"] - attempts[2]["time"]
    assert marker["wall_time_s"] > resumed_alone


def test_second_invocation_skips_finished_runs(reproduced, monkeypatch):
    out = reproduced["out"]

    def no_launch(*args, **kwargs):
        raise AssertionError("a finished run was launched again: {}".format(args))

    monkeypatch.setattr(runner.subprocess, "Popen", no_launch)
    before = (out / "report.csv").stat().st_mtime_ns
    lines = []
    assert cli.main(_argv(out), echo=lines.append) == 0
    assert sum("finished, skipped" in line for line in lines) == 2
    assert (out / "report.csv").stat().st_mtime_ns > before  # the report is rewritten all the same


@pytest.mark.heavy
def test_metrics_json_holds_the_diagnostics_in_range(reproduced):
    out = reproduced["out"]
    for config, ew in (("BoT_TH", False), ("BoT_HNEWTH", True)):
        records = read_metrics(str(out / "SynthReID" / config / "metrics.json"))
        logged = [r for r in records if "diag/hinge_active" in r]
        assert len(logged) >= 2, config  # written with the losses, at least once per epoch
        for r in logged:
            assert 0.0 <= r["diag/hinge_active"] <= 1.0
            assert r["diag/d_ap"] >= 0.0 and r["diag/d_an"] >= 0.0
            assert ("diag/ew_kept" in r) == ew
            if ew:
                assert 0.0 <= r["diag/ew_kept"] <= 1.0
            assert "loss_triplet" in r  # the loss terms sit next to them
