"""The algorithms under the selectors, on plain arrays: no store, no pool, no budget.

    kmeans      FAISS k-means, cluster means, second-nearest centroids, balanced sampling
    submodular  facility location, log-determinant and max-items greedy (GreeDi on Ray)
    graph       sparse k-NN graphs (FAISS) and their recall against exact search
    dedup       exact (normalized text) and semantic (SemDeDup) duplicate finding
    minhash     fuzzy duplicates by MinHash LSH over word shingles (union-find clusters)

The estimators in `curate.selectors` (diversity, deduplicators, similarity, ...) turn a
`Pool` and a budget into these calls.
"""
