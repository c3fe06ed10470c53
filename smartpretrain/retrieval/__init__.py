"""Embedding retrieval: FAISS indexes with id tables, retrieval scores, and the k-NN forecasting probe.

* :mod:`~smartpretrain.retrieval.index`: :class:`~smartpretrain.retrieval.index.EmbeddingIndex` (flat / IVF /
  HNSW over squared L2, saved as one folder whose manifest hashes its files) and the brute-force
  :func:`~smartpretrain.retrieval.index.exact_knn` reference;
* :mod:`~smartpretrain.retrieval.evaluation`: how alike the trajectories an index returns are to the query;
* :mod:`~smartpretrain.retrieval.probe`: forecasting with the futures of the nearest bank histories.

Nothing is imported here: FAISS is loaded only when an index is built or read.
"""
