"""The paper's analyses of a trained model (``s4d analyze``: ``run``) and the figures of
evaluations (``plots``, also used by training). Import the submodules directly: ``run`` needs
the training package, which itself uses ``plots``."""
