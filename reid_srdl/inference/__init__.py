"""Running a network over images (torch): embeddings for re-id, predictions for classification.

features        embedding extraction (batched, flip-averaged, fp32/bf16/fp16, threaded decoding)
classification  top-k accuracy of a classifier over a loader
"""
