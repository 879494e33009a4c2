"""The pydantic bases every model shares: `Strict` for what is read back (specs and stored
records), `Printed` for results that are only written out (`--json`)."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys and wrong types are rejected; instances cannot be changed after loading.

    NaN and infinity are written as JSON constants, so a diverged loss survives a round trip.
    Validators are built when a model is first used (`defer_build`), not when it is imported:
    a command that reads one record does not pay for all of them (benchmarks/startup.py).
    """

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", ser_json_inf_nan="constants", defer_build=True
    )


class Printed(BaseModel):
    """A result printed as JSON and never read back: frozen, with NaN and infinity written as
    null, which every JSON reader takes."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="null", defer_build=True)
