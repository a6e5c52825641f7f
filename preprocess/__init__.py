"""Preprocessing into WebDataset shards (MTCNN alignment, encoding). Not built yet: see issue 3."""
