"""``ExactReidEvaluator``: fastreid's ``ReidEvaluator`` contract on top of our rank metrics.

Same inputs (``process(inputs, outputs)`` with ``inputs["targets"]``, ``inputs["camids"]`` and the feature
tensor as ``outputs``), same multi-process gathering through ``fastreid.utils.comm``, same config keys
(``TEST.METRIC``, ``TEST.AQE``, ``TEST.RERANK``, ``TEST.ROC``) and the same result keys, so fastreid's
``print_csv_format`` prints its usual table. One key more, ``TEST.TIES``: how a correct and a wrong match
at exactly the same distance are ordered (:mod:`.rank`). Its default, ``"pessimistic"`` (the wrong ones
first), gives the same numbers on every machine; fastreid's numbers are the same whenever no such tie
occurs, and ``TEST.TIES fastreid`` reproduces fastreid's order of this machine's numpy in every case.
Differences: nothing is ever compiled (fastreid's evaluator runs ``make`` in site-packages and exits the
process when that fails), ranking is the vectorised :mod:`.rank`, and without re-ranking or ROC the distance matrix is never held whole.
"""
import copy
import itertools
import logging
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics

from fastreid.evaluation.evaluator import DatasetEvaluator
from fastreid.evaluation.query_expansion import aqe
from fastreid.utils import comm
from fastreid.utils.compute_dist import compute_jaccard_distance

from .. import compat
from .checks import as_features
from .distance import check_metric, pairwise_distance
from .features import rank_features
from .rank import TEST_TIES_DEFAULT, check_ties, evaluate_rank
from .roc import roc_scores

logger = logging.getLogger(__name__)

__all__ = ["ExactReidEvaluator"]


class ExactReidEvaluator(DatasetEvaluator):
    """Rank-1/5/10, mAP, mINP (percent) of a query + gallery test set.

    Args:
        cfg: fastreid config (reads ``cfg.TEST``).
        num_query: the first ``num_query`` processed images are queries, the rest the gallery.
        output_dir: unused, kept for fastreid's evaluator signature.
    """

    def __init__(self, cfg, num_query, output_dir=None):
        self.cfg = cfg
        self._num_query = int(num_query)
        self._output_dir = output_dir
        self._cpu_device = torch.device("cpu")
        self._predictions = []
        # a typo in TEST.METRIC or TEST.TIES should fail now, not after a full inference pass
        check_metric(cfg.TEST.METRIC)
        # a config built without add_ewth_config (fastreid's get_cfg alone) has no TEST.TIES
        self._ties = check_ties(cfg.TEST.get("TIES", TEST_TIES_DEFAULT))

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        """inputs: dict with ``targets`` (B,) and ``camids`` (B,); outputs: (B, D) features."""
        self._predictions.append({
            "feats": outputs.to(self._cpu_device, torch.float32),
            "pids": inputs["targets"].to(self._cpu_device),
            "camids": inputs["camids"].to(self._cpu_device),
        })

    def evaluate(self):
        """OrderedDict of percentages: Rank-1, Rank-5, Rank-10, mAP, mINP, metric (+ TPR@FPR=... with ROC).

        In multi-process runs only the main process returns results; the others return ``{}``.
        """
        if comm.get_world_size() > 1:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if not predictions:
            raise ValueError("ExactReidEvaluator.evaluate() called before any process(): no features to evaluate")

        features = torch.cat([p["feats"] for p in predictions], dim=0)
        pids = torch.cat([p["pids"] for p in predictions], dim=0).numpy()
        camids = torch.cat([p["camids"] for p in predictions], dim=0).numpy()
        nq = self._num_query
        if not 0 < nq < features.shape[0]:
            raise ValueError(
                "num_query={} but {} images were processed: need at least one query and one gallery image; "
                "pass the query count of the test set (the query images come first)".format(nq, features.shape[0]))
        query, gallery = features[:nq], features[nq:]
        as_features(query, "query features")
        as_features(gallery, "gallery features")
        q_pids, g_pids, q_camids, g_camids = pids[:nq], pids[nq:], camids[:nq], camids[nq:]

        test = self.cfg.TEST
        if test.AQE.ENABLED:
            logger.info("Test with AQE setting")
            query, gallery = aqe(query, gallery, test.AQE.QE_TIME, test.AQE.QE_K, test.AQE.ALPHA)

        dist = None
        if test.RERANK.ENABLED or test.ROC.ENABLED:
            # both need every distance at once
            dist = pairwise_distance(query, gallery, test.METRIC).numpy()
            if test.RERANK.ENABLED:
                dist = self._rerank(query, gallery, dist)
            cmc, all_AP, all_INP = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, ties=self._ties)
        else:
            cmc, all_AP, all_INP = rank_features(query, gallery, q_pids, g_pids, q_camids, g_camids, test.METRIC,
                                                 ties=self._ties)

        results = OrderedDict()
        mAP = np.mean(all_AP)
        mINP = np.mean(all_INP)
        for r in (1, 5, 10):
            results["Rank-{}".format(r)] = cmc[min(r, cmc.size) - 1] * 100
        results["mAP"] = mAP * 100
        results["mINP"] = mINP * 100
        results["metric"] = (mAP + cmc[0]) / 2 * 100

        if test.ROC.ENABLED:
            scores, labels = roc_scores(dist, q_pids, g_pids, q_camids, g_camids)
            fprs, tprs, _ = metrics.roc_curve(labels, scores)
            for fpr in (1e-4, 1e-3, 1e-2):
                results["TPR@FPR={:.0e}".format(fpr)] = tprs[np.argmin(np.abs(fprs - fpr))]
        return copy.deepcopy(results)

    def _rerank(self, query, gallery, dist):
        """k-reciprocal re-ranking as fastreid does it: its Jaccard distance on (normalised, for cosine)
        features, mixed with the original distances by ``TEST.RERANK.LAMBDA``."""
        logger.info("Test with rerank setting")
        rerank = self.cfg.TEST.RERANK
        if self.cfg.TEST.METRIC == "cosine":
            query = F.normalize(query, dim=1)
            gallery = F.normalize(gallery, dim=1)
        jaccard = compute_jaccard_distance(torch.cat((query, gallery), dim=0), k1=rerank.K1, k2=rerank.K2,
                                           search_option=compat.jaccard_search_option())
        nq = query.shape[0]
        return jaccard[:nq, nq:] * (1 - rerank.LAMBDA) + dist * rerank.LAMBDA
