"""The spec's model of a source's row rules (``rules: {column: {...}}``).

The rules are evaluated by :mod:`hub.validation.rules`; the model lives in the spec layer so that loading a
spec never imports the validation layer.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.transform.types import check_type

#: The order in which a column's checks run; the first that fails names the row's reason.
CHECKS = ("not_null", "type", "min", "max", "regex", "in")
Scalar = bool | int | float | str | date | datetime


def _known_type(name: str) -> str:
    check_type(name)  # raises ValueError with the list of known types
    return name


#: A column type name (string, int64, decimal(p,s), ...), checked against the known types: used by `rules:`
#: and by `columns:` (hub.spec.models.ColumnSpec).
TypeName = Annotated[str, AfterValidator(_known_type)]


class RuleSpec(BaseModel):
    """The checks of one column (``rules: {column: {...}}`` in a source)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    not_null: bool = Field(False, description="The value must be present.")
    type: TypeName | None = Field(None, description="The value must convert to this type (string, int64, "
                                                "decimal(p,s), date, timestamptz ...); the column is loaded as it.")
    min: Scalar | None = Field(None, description="Smallest allowed value (inclusive): a number, date or timestamp.")
    max: Scalar | None = Field(None, description="Largest allowed value (inclusive).")
    regex: str | None = Field(None, description="The value (as text) must contain a match (RE2 syntax; anchor "
                                                "with ^...$ for a full match).")
    in_: list[Scalar] | None = Field(None, alias="in", min_length=1, description="The allowed values.")
    unique: bool = Field(False, description="No two rows of one load may have the same value.")

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import pyarrow as pa  # only when a spec has a regex rule
        import pyarrow.compute as pc

        try:
            re.compile(v)
            pc.match_substring_regex(pa.array([""]), v)  # Arrow's RE2 accepts less than Python's re
        except (re.error, pa.ArrowInvalid) as exc:
            raise ValueError(f"not a valid regular expression (RE2 syntax): {exc}") from None
        return v

    @field_validator("in_")
    @classmethod
    def _in(cls, v: list[Scalar] | None) -> list[Scalar] | None:
        if v and any(isinstance(x, bool) for x in v) and any(isinstance(x, str) for x in v):
            raise ValueError("mixes text and true/false: YAML reads unquoted NO, no, yes, on, off as booleans; "
                             "quote them (\"NO\")")
        return v

    @model_validator(mode="after")
    def _something(self) -> RuleSpec:
        if not (self.not_null or self.unique or any(getattr(self, k) is not None for k in
                                                    ("type", "min", "max", "regex", "in_"))):
            raise ValueError("no check given (not_null, type, min, max, regex, in, unique)")
        return self

    def checks(self) -> list[str]:
        """The checks this rule makes, in evaluation order (``unique`` last)."""
        out = [c for c in CHECKS if (getattr(self, c) if c == "not_null" else  # `min: 0` is a check too
                                     getattr(self, "in_" if c == "in" else c) is not None)]
        return [*out, "unique"] if self.unique else out
