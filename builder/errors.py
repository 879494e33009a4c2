"""Errors that map onto the command line's exit codes (DESIGN.md, "The command line")."""


class CapsuleError(Exception):
    """A failure the user can act on: printed as one line, never as a traceback."""

    exit_code = 2


class BadInput(CapsuleError):
    """Bad usage or bad input: a spec, data file or directory that cannot be used."""

    exit_code = 2


class IntegrityError(CapsuleError):
    """A digest does not match: something in a capsule was altered."""

    exit_code = 3


class EngineMissing(CapsuleError):
    """An engine the command needs (Docker, NVIDIA runtime, Slurm) is not there."""

    exit_code = 4
