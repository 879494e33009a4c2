"""The one pydantic base every spec and manifest model shares: strict, frozen, no unknown keys."""

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys and wrong types are rejected; instances cannot be changed after loading.

    NaN and infinity are written as JSON constants, so a diverged loss survives a round trip.
    """

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", ser_json_inf_nan="constants"
    )
