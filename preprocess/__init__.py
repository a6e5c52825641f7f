"""Preprocessing: manifests, raw layout adapters, MTCNN alignment, encoding, WebDataset shards
(``s4d shards``, ``s4d inspect``)."""
