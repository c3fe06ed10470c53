"""The run layer: the work behind every entry point, built once from config, and the pipeline that chains them.

The entry points (``python -m smartpretrain.<name>``: ``convert``, ``inspect``, ``pretrain``, ``finetune``,
``evaluate``, ``demo``) only parse their command line and turn expected failures into one line with exit status 2
(:mod:`~smartpretrain.runs.cli`); none imports another, and nothing imports them. The work lives here, one module
per entry point, importable by the pipeline, the scripts and the tests:

* :mod:`~smartpretrain.runs.conversion`: raw split -> scene cache (``configs/convert.yaml``);
* :mod:`~smartpretrain.runs.inspection`: summaries and plots of a converted cache;
* :mod:`~smartpretrain.runs.pretraining`: SSL backbone, objectives, task, view data module, checks, ``run``
  (``configs/pretrain.yaml``);
* :mod:`~smartpretrain.runs.finetuning`: checks and ``run`` of forecasting fine-tuning (``configs/train.yaml``);
* :mod:`~smartpretrain.runs.evaluation`: val metrics or the test submission of a checkpoint
  (``configs/evaluate.yaml``);
* :mod:`~smartpretrain.runs.embedding`: per-agent embedding records of a cache split (``configs/embed.yaml``);
* :mod:`~smartpretrain.runs.pipeline`: pre-train -> fine-tune (pre-trained and scratch arms) -> evaluate as one
  function, reusing finished stages (the demo, ``scripts/study_av1.py``, ``av1_ssl_run.py``, ``av1_small_run.py``,
  ``mix_pretrain_run.py``); :mod:`~smartpretrain.runs.comparison`: the tables that compare its arms;
  :mod:`~smartpretrain.runs.studies`: what the study scripts share (AV1 conversion, reused results, timers);
  :mod:`~smartpretrain.runs.scaling`: the pre-training data-scaling study (pools, budgets, power-law fit, plot).

What every training run shares:

* :mod:`~smartpretrain.runs.trainer`: the run folder (resolved config, seed, ``final_metrics.json``), the backbone
  with its initial weights, the ``resume=`` checkpoint, and the Trainer built from config groups;
* :mod:`~smartpretrain.runs.guards`: option and input checks that run before any long work;
* :mod:`~smartpretrain.runs.resume`: exact resume (RNG states, data position) and periodic checkpoints.

Configs mirror this: one top config per entry point (``configs/{convert,pretrain,train,evaluate}.yaml``) composes
the groups ``data/``, ``model/``, ``ssl/`` (pre-training), ``trainer/`` (the Lightning Trainer: ``cpu``, ``gpu``),
``callbacks/`` (``default``: exact resume, lr monitor, best-k checkpoints, ``last.ckpt`` at every epoch end and
periodically) and ``logger/`` (``csv``, ``tensorboard``, ``csv_tensorboard``), and ``experiment/`` presets. The
run's own options (``seed``, ``monitor``, ``save_top_k``, ``checkpoint.*``) stay in the top config; the groups refer
to them.
"""
