"""Self-supervised objectives (SmartPretrain's TCL and TRL) and what they share: heads, momentum, distribution."""
