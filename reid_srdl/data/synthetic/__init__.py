"""Synthetic re-id data sets in the exact on-disk forms of the real ones (CPU demos, tests).

people     the renderer: identities, cameras, shots and their pictures (numpy + OpenCV)
market     Market-1501 (plan, writer, marker file, ensure_synthetic_market)
reid_sets  DukeMTMC-reID, MSMT17, CUHK03, VIPeR writers (WRITERS, ensure_synthetic)

Every writer fills a temporary sibling folder renamed into place at the end
(:func:`reid_srdl.core.files.write_folder_atomically`).
"""
