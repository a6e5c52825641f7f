"""The paper's analyses of a trained model (``s4d analyze``): ``collect`` (one pass over a
manifest's test split and its still-image source), ``experts`` (Fig. 5), ``relevance``
(Fig. 4), ``attention`` (Fig. 6), ``order`` (frames in order vs shuffled) and ``scores`` (Fig. 7). Figures live in
``s4d.plots``. Each writes only its own files (``WRITES``) into a folder of kind ``analyze``
(``preprocess.ownership``): never into a training run's folder."""

# The files each analysis writes: --force replaces these, and only these.
WRITES: dict[str, tuple[str, ...]] = {
    "experts": ("experts.json", "experts.png"),
    "relevance": ("relevance.json", "relevance.png"),
    "order": ("frame_order.json",),
    "scores": ("confusion.png", "recall.png"),
    "attention": ("attention.json",),  # + the attention_<input>.png/.npy it lists (removed by --force from that list)
}
