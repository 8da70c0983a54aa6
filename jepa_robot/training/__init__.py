"""Training: the action-conditioned predictor (``train``: ``jepa-robot train``), the
small V-JEPA encoder (``pretrain``: ``jepa-robot pretrain-encoder``) and a state
readout on a trained checkpoint (``fit_readout``: ``jepa-robot fit-readout``)."""
