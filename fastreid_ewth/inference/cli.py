"""The command lines of ``tools/embed.py``, ``tools/evaluate.py`` and ``tools/export_onnx.py``.

Each takes its config the way ``tools/train_net.py`` does (``--config-file`` and trailing ``KEY VALUE``
overrides), checks its values as ``tools/train_net.py`` does (``check_config_values``) and reports a bad
input on stderr with exit status 2, nothing written.
"""
import argparse
import json
import logging
import os
import sys

from ..config import check_config_values
from ..engine import load_cfg
from ..evaluation.rank import TIES
from ..files import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["embed_main", "evaluate_main", "export_main"]


def _logging():
    """fastreid's console logger (its tables, inference progress) and this package's, on stdout.

    Our own handler rather than fastreid's ``setup_logger``: that one is cached per arguments, so a second
    call in one process (a script running two tools) would keep writing to the first call's ``sys.stdout``.
    """
    formatter = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S")
    for name in ("fastreid", "fastreid_ewth"):
        log = logging.getLogger(name)
        log.setLevel(logging.INFO)
        log.propagate = False
        for handler in [h for h in log.handlers if getattr(h, "_ewth_tool", False)]:
            log.removeHandler(handler)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(formatter)
        handler._ewth_tool = True
        log.addHandler(handler)


def _add_config_args(parser, config_required=True):
    parser.add_argument("--config-file", required=config_required, metavar="FILE",
                        help="the run's YAML config (e.g. projects/Demo.yml, or OUTPUT_DIR/config.yaml of a run)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides as in tools/train_net.py, e.g. MODEL.WEIGHTS logs/demo/model_final.pth")


def _fail(prog, error):
    print("{}: error: {}".format(prog, error), file=sys.stderr)
    return 2


def embed_main(argv=None, prog="tools/embed.py"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Embed the config's test set (OUTPUT/query.npz, OUTPUT/gallery.npz) or a folder of "
        "images (OUTPUT/embeddings.npz) with a trained model, exactly as --eval-only computes the test feature. "
        "Each file holds feats (N x D float32), pids, camids and paths.")
    _add_config_args(parser)
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the embedding files")
    parser.add_argument("--images", metavar="FOLDER", help="embed every image under FOLDER instead of the test set")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    _logging()
    from .embed import write_folder_embeddings, write_test_set_embeddings

    try:
        cfg = load_cfg(args.config_file, args.opts)
        check_config_values(cfg)  # these tools do not go through validate_run
        if args.images:
            paths = [write_folder_embeddings(cfg, args.images, args.output, not args.no_progress)]
        else:
            paths = write_test_set_embeddings(cfg, args.output, not args.no_progress)
    except (ValueError, FileNotFoundError, KeyError) as e:
        return _fail(prog, e)
    for path in paths:
        print(path)
    return 0


def evaluate_main(argv=None, prog="tools/evaluate.py"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Evaluate embedding files written by tools/embed.py: the same Rank-k, mAP and mINP "
        "as --eval-only of the same model and TEST options, printed as fastreid's table. Options: fastreid's "
        "defaults, then --config-file's TEST keys, then KEY VALUE overrides, then the flags below.")
    parser.add_argument("--query", required=True, metavar="NPZ", help="query embeddings (DIR/query.npz)")
    parser.add_argument("--gallery", required=True, metavar="NPZ", help="gallery embeddings (DIR/gallery.npz)")
    _add_config_args(parser, config_required=False)
    parser.add_argument("--metric", choices=("cosine", "euclidean"), help="TEST.METRIC")
    parser.add_argument("--rerank", action="store_true", default=None, help="k-reciprocal re-ranking "
                        "(TEST.RERANK.ENABLED; K1, K2, LAMBDA from the config or KEY VALUE)")
    parser.add_argument("--aqe", action="store_true", default=None, help="average query expansion "
                        "(TEST.AQE.ENABLED; QE_TIME, QE_K, ALPHA from the config or KEY VALUE)")
    parser.add_argument("--roc", action="store_true", default=None, help="TPR at FPR 1e-4/1e-3/1e-2 (TEST.ROC.ENABLED)")
    parser.add_argument("--ties", choices=TIES, help="TEST.TIES: how a correct and a wrong match at exactly the same "
                        "distance are ordered (default pessimistic: wrong first; fastreid: numpy's argsort order)")
    parser.add_argument("--name", help="the test set's name in the table (default: the query file's folder)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    args = parser.parse_args(argv)
    _logging()
    from .embeddings import load_embeddings
    from .offline import evaluate_embeddings, print_results

    flags = []
    for key, value in (("TEST.METRIC", args.metric), ("TEST.RERANK.ENABLED", args.rerank),
                       ("TEST.AQE.ENABLED", args.aqe), ("TEST.ROC.ENABLED", args.roc), ("TEST.TIES", args.ties)):
        if value is not None:
            flags += [key, str(value)]
    try:
        cfg = load_cfg(args.config_file, list(args.opts) + flags)
        check_config_values(cfg)  # these tools do not go through validate_run
        query, gallery = load_embeddings(args.query), load_embeddings(args.gallery)
        results = evaluate_embeddings(cfg, query, gallery)
    except (ValueError, FileNotFoundError, KeyError) as e:
        return _fail(prog, e)
    name = args.name or os.path.basename(os.path.dirname(os.path.abspath(args.query)))
    print_results(results, name)
    if args.json:
        text = json.dumps({k: float(v) for k, v in results.items()}, indent=2).encode("utf-8")
        atomic_write(args.json, lambda f: f.write(text))
    return 0


def export_main(argv=None, prog="tools/export_onnx.py"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Export a trained model to ONNX (dynamic batch size), then check the file with "
        "onnxruntime on real images (--images, else the config's test set) against PyTorch: prints "
        "'max abs diff <number>' and refuses (writes nothing) above 1e-4. Input 'images': N x 3 x H x W float32 "
        "RGB 0..255 at INPUT.SIZE_TEST; output 'features': N x D, the test feature.")
    _add_config_args(parser)
    parser.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument("--images", metavar="FOLDER", help="check on the images under FOLDER instead of the test set")
    args = parser.parse_args(argv)
    _logging()
    from .export import ExportError, TOLERANCE, export_onnx

    try:
        cfg = load_cfg(args.config_file, args.opts)
        check_config_values(cfg)  # these tools do not go through validate_run
        diff = export_onnx(cfg, args.output, images=args.images)
    except (ValueError, FileNotFoundError, KeyError, ImportError, ExportError) as e:
        return _fail(prog, e)
    print("max abs diff {:.3g} (tolerance {:g}); wrote {}".format(diff, TOLERANCE, args.output))
    return 0
