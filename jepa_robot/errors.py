"""The one base type of the errors ``jepa-robot`` reports to its user.

An error of a type derived from :class:`JepaRobotError` says what is wrong with the
user's input or files (a config value, a checkpoint, a dataset, an encoder directory, a
run directory in use) in one line that names the key or the file. The command line
(``jepa_robot.cli``) prints such an error as ``jepa-robot <command>: error: <message>``
and exits with code 2; any other exception is a bug and keeps its traceback (exit 1).

The types derive from ``ValueError`` or ``OSError`` too, where they did before, so code
that catches those keeps working. ``envs/`` cannot import this module (it never imports
``jepa_robot``); the command line names its error types explicitly.
"""

from __future__ import annotations


class JepaRobotError(Exception):
    """Base of every error ``jepa-robot`` reports to its user as a one-line message."""


class RunDirectoryError(JepaRobotError, ValueError):
    """A run directory (``out_dir``) cannot be used as asked: it holds another run, an
    earlier report, or a training state this version does not read."""


class RunLockedError(RunDirectoryError):
    """Another process is writing to the run directory (``out_dir``) now."""


class TrainingStateError(RunDirectoryError):
    """A run directory's training state is missing pieces, damaged, or in the old
    pickle format."""


class TrainingDivergedError(JepaRobotError, FloatingPointError):
    """The training loss became NaN or infinite (the learning rate is too high, say)."""


__all__ = ["JepaRobotError", "RunDirectoryError", "RunLockedError", "TrainingDivergedError", "TrainingStateError"]
