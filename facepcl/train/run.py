"""Run a training from a config and overrides: what ``facepcl train`` and ``python -m facepcl.train`` call."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from . import distributed as D
from .config import load_config


def main(argv: Sequence[str]) -> int:
    """Run a training; ``argv`` is ``[CONFIG, key=value, ...]`` as ``facepcl train`` takes them.

    Args:
        argv: A YAML file or bundled recipe name (pcl, smoke, check), then
            dotted ``key=value`` overrides with YAML values.

    Returns:
        The exit code: 0, or 3 when ``log.verdict_window`` asked for a
        verdict and a loss did not fall (the ``check`` recipe).

    Raises:
        ValueError: No config was named, or an override is malformed.

    Example:
        >>> main(["smoke", "data.root=frames", "output_dir=/tmp/run", "train.max_steps=2"])  # doctest: +SKIP
        0
    """
    if not argv:
        raise ValueError("name a config: a YAML file or a bundled recipe (pcl, smoke, check)")
    cfg = load_config(argv[0], list(argv[1:]))
    if not logging.getLogger().handlers:  # standalone (python -m, torchrun); the facepcl CLI sets up its own
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = D.init_distributed(cfg.device)
    logger = logging.getLogger("facepcl.train")
    if logger.level == logging.NOTSET:
        # Rank 0 reports what the run does (resume, checkpoints, export); the others only warnings.
        logger.setLevel(logging.INFO if env.is_main else logging.WARNING)
    try:
        from .trainer import Trainer

        trainer = Trainer(cfg, env)
        trainer.fit()
    finally:
        if env.distributed:
            D.shutdown()
    # log.verdict_window: a loss that did not fall is a failed check (exit status 3)
    return 3 if trainer.passed is False else 0

