"""Nearest-neighbour search over feature vectors: numpy and faiss, no torch.

distances   squared L2 distance blocks in numpy (no faiss: the metrics import only this)
exact       exact k-NN (faiss IndexFlatL2, GPU when present) and the GPU distance block
ivf         approximate k-NN (faiss IVF-Flat / IVF-PQ), saved and memory-mapped index files

Nothing is imported here, so ``reid_srdl.index.distances`` does not load faiss.
"""
