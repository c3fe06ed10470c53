"""The run layer: what every training entry point needs, built once from config.

* :mod:`~smartpretrain.runs.guards`: option and input checks that run before any long work;
* :mod:`~smartpretrain.runs.resume`: exact resume (RNG states, data position) and periodic checkpoints;
* :mod:`~smartpretrain.runs.trainer`: the Lightning Trainer, its checkpoint callbacks and logger, the run folder
  (resolved config and seed), and the safe path by which a ``resume=`` checkpoint reaches Lightning.
"""
