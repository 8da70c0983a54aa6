"""Meta-World v3 goal-image tasks: the env (``env``), scripted experts (``experts``) and
the evaluation protocol's goal images (``goals``)."""
