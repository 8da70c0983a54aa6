"""jepa-robot: planning with action-conditioned V-JEPA world models.

See README.md for the commands; the packages are envs/ (simulation, recording),
planners/ (trajectory optimisation) and jepa_robot/ (encoders, predictor, training,
checkpoints, CLI).
"""

__version__ = "0.1.0"
