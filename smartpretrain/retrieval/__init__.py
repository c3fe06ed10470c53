"""Embedding retrieval: FAISS indexes with id tables, retrieval scores, and the k-NN forecasting probe."""
