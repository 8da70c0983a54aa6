"""The world model's pieces: the frozen V-JEPA encoder (``encoders``), the
action-conditioned predictor (``predictor``), the optional state readout
(``readout``), the self-describing checkpoint (``checkpoint``), the V-JEPA 2-AC
weight import (``vjepa2_ac``), and ``model.WorldModel``, which puts them together
behind the verbs the agent uses."""
