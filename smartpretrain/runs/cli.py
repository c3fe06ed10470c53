"""What the thin entry points share: the Hydra run folder, and expected failures as one line with exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from smartpretrain.runs.cluster import register_resolvers, unshared_run_folder

__all__ = ["hydra_run_dir", "one_line_errors", "refuse_unshared_launch"]

register_resolvers()  # the configs' ${sp.*} resolvers, before an entry point's @hydra.main composes them


def hydra_run_dir() -> Path:
    """The output folder Hydra made for this run (``hydra.run.dir``)."""
    return Path(HydraConfig.get().runtime.output_dir)


@contextmanager
def one_line_errors(prog: str, expected: tuple[type[Exception], ...]) -> Iterator[None]:
    """An ``expected`` failure inside the block ends the process with ``<prog>: error: <message>`` on stderr and
    exit status 2, without a traceback (a bad option or input, not a bug); anything else propagates."""
    try:
        yield
    except expected as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def refuse_unshared_launch(prog: str) -> None:
    """Before Hydra composes anything: processes of one torchrun launch that could not agree on a run folder end
    with ``<prog>: error: ...`` and exit status 2 (:func:`~smartpretrain.runs.cluster.unshared_run_folder`)."""
    reason = unshared_run_folder(sys.argv[1:])
    if reason is not None:
        print(f"{prog}: error: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(2)
