"""The embedding API: a backbone (+ checkpoint, + SSL branch) and a scene cache -> per-agent records
``(scenario_id, track_id, dataset, role, step, vector)`` in one columnar file.

* :mod:`~smartpretrain.embeddings.records`: the records, the file (parquet, vectors as fixed-size float32 lists,
  metadata naming model, weights and cache), its atomic writer and the reader that refuses a file made by
  anything other than what the caller expects;
* :mod:`~smartpretrain.embeddings.extract`: the batch loop over a cache split (eval mode, no_grad,
  deterministic), reading each batch only through :meth:`~smartpretrain.backbones.base.Backbone.embed_agents`.

The command line is ``python -m smartpretrain.embed`` (``embed.sh``).
"""
