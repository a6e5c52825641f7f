"""Loading pipelines (DALI on GPU/CPU, pure-PyTorch fallback). Not built yet: see issue 4."""
