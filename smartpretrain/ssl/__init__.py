"""Self-supervised objectives (TCL, TRL, MAE), the contract they declare their needs in (:mod:`.objective`), and
what they share: heads, momentum, distribution."""
