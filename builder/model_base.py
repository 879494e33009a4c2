"""The pydantic bases every model shares: `Strict` for what is read back (specs and stored
records), `Printed` for results that are only written out (`--json`)."""

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _nonfinite(value: Any) -> Any:
    return NONFINITE.get(value, value) if isinstance(value, str) else value


Real = Annotated[
    float,
    BeforeValidator(_nonfinite),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"enum": list(NONFINITE)}]}),
]
"""A stored float that may be NaN or infinite (a diverged loss): written as the string "NaN",
"Infinity" or "-Infinity" and read back from it, or from the bare tokens older files hold."""


class Strict(BaseModel):
    """Unknown keys and wrong types are rejected; instances cannot be changed after loading.

    NaN and infinity are written as the strings "NaN", "Infinity" and "-Infinity", so that a
    stored record is valid JSON; fields that may hold them are `Real`, which reads them back
    (and the bare NaN tokens of records written before).
    Validators are built when a model is first used (`defer_build`), not when it is imported:
    a command that reads one record does not pay for all of them (benchmarks/startup.py).
    """

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", ser_json_inf_nan="strings", defer_build=True
    )


class Printed(BaseModel):
    """A result printed as JSON and never read back: frozen, with NaN and infinity written as
    null, which every JSON reader takes."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="null", defer_build=True)
