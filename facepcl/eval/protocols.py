"""The paper's downstream protocols, run honestly, as one call each.

A protocol fixes the features (trunk F by default), the input size, the
head and its optimisation (see :data:`PROTOCOLS`). :func:`run_protocol`
computes features once (cached), trains the head, evaluates it on the
test data and returns a :class:`Report` whose table puts this run next to
the paper's numbers with the protocol and the model selection written out.

Model selection: by default the epoch is chosen on a validation split
held out from the TRAINING data (``selection="holdout"``) and the test set
is used once. ``selection="val"`` uses the dataset's own validation split
(FER-2013's PublicTest). ``selection="test"`` reproduces the reference
code, which keeps the epoch with the best TEST score; results so obtained
are optimistic and are labelled as such in every output. ``"last"`` keeps
the final epoch.

The code lives in :mod:`facepcl.eval._protocol` (protocols, options,
reports), :mod:`facepcl.eval._linear` (frozen-encoder runs, sharing one
:class:`RunContext`) and :mod:`facepcl.eval._full` (full fine-tuning).
"""

from __future__ import annotations

from ._full import run_finetune
from ._linear import RunContext, evaluate_head, run_protocol
from ._protocol import (
    PAPER,
    PROTOCOLS,
    SELECTIONS,
    PaperRow,
    Protocol,
    ProtocolResult,
    Report,
    RunOptions,
    holdout,
)

__all__ = ["PAPER", "PROTOCOLS", "SELECTIONS", "PaperRow", "Protocol", "ProtocolResult", "Report", "RunContext",
           "RunOptions", "evaluate_head", "holdout", "run_finetune", "run_protocol"]
