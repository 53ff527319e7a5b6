"""The package without a checkout: a wheel of the repository, installed (not editable) into a fresh venv,
imports and trains from another folder with ``python -m fastreid_ewth.train``.

The fresh venv borrows torch, fastreid and the other dependencies from the environment running the tests,
through a ``.pth`` file that holds that environment's site-packages as a plain path line. Python appends
such a line to ``sys.path`` without processing the ``.pth`` files found in that folder, so the editable
install of this checkout (``__editable__.fastreid_ewth-*.pth`` and its import finder) stays inactive there:
the only ``fastreid_ewth`` the fresh venv can import is the wheel's. The test proves it, then trains.
"""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO

# One epoch of projects/Demo.yml at 16×8 on a slice of SynthReID (see _small_synth): a few steps of P×K = 16×4
# and one evaluation.
SHORT = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[16,8]", "INPUT.SIZE_TEST", "[16,8]", "INPUT.PADDING.SIZE", "2",
         "SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.STEPS", "[1]", "SOLVER.CHECKPOINT_PERIOD", "1",
         "TEST.EVAL_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0"]

PROBE = r"""
import importlib.util, json, sys, sysconfig
fresh = sysconfig.get_paths()["purelib"]
import fastreid_ewth, fastreid, torch
info = {
    "fastreid_ewth": fastreid_ewth.__file__, "fastreid": fastreid.__file__, "torch": torch.__file__,
    "fresh": fresh, "sys_path": sys.path, "editable_modules": [m for m in sys.modules if "editable" in m.lower()],
    "meta_path": [repr(f) for f in sys.meta_path],
}
# without the fresh site-packages, nothing else on the path provides fastreid_ewth
for name in [m for m in sys.modules if m == "fastreid_ewth" or m.startswith("fastreid_ewth.")]:
    del sys.modules[name]
sys.path.remove(fresh)
info["elsewhere"] = getattr(importlib.util.find_spec("fastreid_ewth"), "origin", None)
print("PROBE" + json.dumps(info))
"""


def _run(cmd, **kwargs):
    res = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert res.returncode == 0, "{}\n{}\n{}".format(cmd, res.stdout[-3000:], res.stderr[-3000:])
    return res


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, a folder outside the repository)."""
    tmp = tmp_path_factory.mktemp("install")
    # build from a copy of what the wheel is made of, so that the build's build/ and *.egg-info stay out of
    # the working tree
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "fastreid_ewth", src / "fastreid_ewth",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*.partial"))
    wheels = tmp / "wheels"
    quiet = ["--quiet", "--disable-pip-version-check", "--no-index"]  # --no-index: nothing downloaded
    _run([sys.executable, "-m", "pip", "wheel", *quiet, "--no-deps", "--no-build-isolation", "-w", str(wheels),
          str(src)], env=_clean_env())
    (wheel,) = wheels.glob("fastreid_ewth-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    fresh_site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      env=_clean_env()).stdout.strip()
    # this environment's pip installs into the fresh venv (--python); done before the .pth below exists, so
    # that pip there cannot see (and replace) this environment's fastreid_ewth
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", *quiet, "--no-deps", str(wheel)],
         env=_clean_env())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    with open(os.path.join(fresh_site, "zz_test_environment.pth"), "w") as f:
        f.write("".join(path + "\n" for path in sorted(ours)))
    outside = tmp / "elsewhere"
    outside.mkdir()
    return python, outside


def test_wheel_is_imported_from_the_fresh_venv_not_the_checkout(fresh_venv):
    import json

    python, outside = fresh_venv
    res = _run([str(python), "-c", PROBE], cwd=outside, env=_clean_env())
    info = json.loads(res.stdout.split("PROBE", 1)[1])
    venv = os.path.realpath(os.path.dirname(os.path.dirname(str(python))))
    assert os.path.realpath(info["fastreid_ewth"]).startswith(venv + os.sep), info["fastreid_ewth"]
    assert os.path.realpath(info["fastreid_ewth"]).startswith(os.path.realpath(info["fresh"]))
    # the dependencies come from this environment ...
    ours = os.path.realpath(sysconfig.get_paths()["purelib"])
    assert os.path.realpath(info["torch"]).startswith(ours) and os.path.realpath(info["fastreid"]).startswith(ours)
    # ... without its editable install: no finder of it, no checkout on the path, no other fastreid_ewth
    assert info["editable_modules"] == [] and not any("editable" in f.lower() for f in info["meta_path"])
    assert not any(os.path.realpath(p or str(outside)) == os.path.realpath(str(REPO)) for p in info["sys_path"])
    assert info["elsewhere"] is None, info["elsewhere"]


def test_the_editable_install_is_live_here_but_not_there(fresh_venv):
    """The control: this environment's own interpreter, from the same folder, finds the checkout."""
    python, outside = fresh_venv
    site = sysconfig.get_paths()["purelib"]
    if not [n for n in os.listdir(site) if n.startswith("__editable__") and "fastreid_ewth" in n]:
        pytest.skip("fastreid_ewth is not installed in editable mode here")
    probe = "import importlib.util; print(importlib.util.find_spec('fastreid_ewth').origin)"
    here = _run([sys.executable, "-c", probe], cwd=outside, env=_clean_env()).stdout.strip()
    there = _run([str(python), "-c", probe], cwd=outside, env=_clean_env()).stdout.strip()
    assert os.path.realpath(here).startswith(os.path.realpath(str(REPO)) + os.sep), here
    assert not os.path.realpath(there).startswith(os.path.realpath(str(REPO)) + os.sep), there


def _small_synth(datasets_root, root, train_ids=32, test_ids=20):
    """A FASTREID_DATASETS folder whose SynthReID holds the images of its first identities only (an epoch
    costs what its images cost); the marker makes it pass for a complete, generated set."""
    from fastreid_ewth.data.synth_reid import MARKER, NUM_TRAIN_IDS, SYNTH_LAYOUT

    source = os.path.join(datasets_root, "SynthReID")
    target = root / "SynthReID"
    for sub in SYNTH_LAYOUT:
        (target / sub).mkdir(parents=True)
        first, count = (1, train_ids) if sub == "bounding_box_train" else (NUM_TRAIN_IDS + 1, test_ids)
        for name in os.listdir(os.path.join(source, sub)):
            if first <= int(name.split("_")[0]) < first + count:
                shutil.copy2(os.path.join(source, sub, name), target / sub / name)
    shutil.copy2(os.path.join(source, MARKER), target / MARKER)
    return root


def test_one_short_training_with_the_installed_module(fresh_venv, datasets_root):
    python, outside = fresh_venv
    datasets = _small_synth(datasets_root, outside / "datasets")
    out = outside / "run"
    cmd = [str(python), "-m", "fastreid_ewth.train", "--config-file", str(REPO / "projects" / "Demo.yml"),
           *SHORT, "OUTPUT_DIR", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=outside,
                         # one intra-op thread: on a busy 2-core machine two threads mostly wait for each other
                         env=_clean_env(FASTREID_DATASETS=str(datasets), OMP_NUM_THREADS="1"))
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert "Command Line Args:" in res.stdout
    assert (out / "model_final.pth").is_file(), sorted(os.listdir(out))
    assert "| SynthReID" in log  # fastreid's results table after the last epoch
