"""What a person reads on the console: our lines, without the libraries' chatter.

Lightning logs a device summary ("GPU available: ...", "TPU available: ...") and advertising tips at INFO level on
every ``Trainer``; the pinned torch / Lightning pair warns about its own internals (``LeafSpec`` deprecation) on
every fit, and Lightning gives advice that does not apply to a deliberate setting (a log interval longer than a
short epoch, few DataLoader workers on a 2-core machine). None of it tells the user something about their run, so
every entry point calls :func:`quiet_libraries` first. Warnings about the run itself (a checkpoint that does not
match, a metric that is not finite) are ours and are errors or printed lines, not filtered here.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["LIBRARY_LOGGERS", "LIBRARY_NOISE", "quiet_libraries"]

#: loggers whose INFO lines are the libraries' own (device summary, tips); their warnings still show
LIBRARY_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning")

#: warning messages (regular expressions, matched at the start) that are library internals or generic advice
LIBRARY_NOISE = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"The '\w+_dataloader' does not have many workers",
    r"`torch\.jit\.script` is deprecated",
)


def quiet_libraries() -> None:
    """Raise the libraries' loggers to WARNING and ignore the warnings of :data:`LIBRARY_NOISE` (idempotent)."""
    import pytorch_lightning  # noqa: F401  (its import sets its logger to INFO; this must come after)

    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
