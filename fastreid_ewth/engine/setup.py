"""Config set-up shared by ``tools/train_net.py`` and the tests."""
import logging

from fastreid.config import get_cfg
from fastreid.engine import default_setup
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from ..config import add_ewth_config
from .validate import validate_run

logger = logging.getLogger(__name__)


def setup_cfg(args):
    """Build the frozen config of a run from fastreid-style ``args`` and do fastreid's default set-up.

    ``args`` has ``config_file`` and ``opts`` (trailing ``KEY VALUE`` overrides), as parsed by
    ``fastreid.engine.default_argument_parser``.
    """
    cfg = get_cfg()
    add_ewth_config(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    # reject bad input before default_setup creates OUTPUT_DIR and writes its log and config copy
    world_size = getattr(args, "num_gpus", 1) * getattr(args, "num_machines", 1)
    validate_run(cfg, world_size=world_size, eval_only=getattr(args, "eval_only", False))
    default_setup(cfg, args)
    if cfg.SEED >= 0:
        # fastreid seeds every run at random; a fixed SEED makes runs repeatable (one stream per rank)
        seed_all_rng(cfg.SEED + comm.get_rank())
    return cfg
