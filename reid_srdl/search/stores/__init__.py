"""Gallery stores: one interface (:mod:`.base`), one engine per module.

faiss   an embedded folder on disk (append-only segments + a manifest; the default)
milvus  pymilvus: a Milvus Lite ``*.db`` file, or a Milvus server at ``http(s)://host:port``
"""
