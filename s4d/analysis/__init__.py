"""The paper's analyses of a trained model (``s4d analyze``): ``collect`` (one pass over a
manifest's test split and its still-image source), ``experts`` (Fig. 5), ``relevance``
(Fig. 4), ``order`` (frames in order vs shuffled) and ``scores`` (Fig. 7). Figures live in
``s4d.plots``."""
