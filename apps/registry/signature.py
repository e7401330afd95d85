"""The typed signature of a model version: its input features and its output."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from apps.registry import encoding


class FeatureType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORY = "category"


class Feature(BaseModel):
    """One input feature. ``pii`` features are pseudonymised or dropped in decision records;
    ``protected`` ones define the groups of fairness gates and bias reports."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    type: FeatureType
    description: str = Field(default="", max_length=300)
    unit: str = Field(default="", max_length=30)
    minimum: float | None = None
    maximum: float | None = None
    allowed: list[str] | None = Field(default=None, min_length=1, max_length=200)
    pii: bool = False
    protected: bool = False
    # False for a protected attribute that is collected to measure fairness but never fed to
    # the model (fairness through unawareness, with the means to check it).
    model_input: bool = True
    # For a numeric protected feature: the edges of its fairness groups, e.g. age [25, 40].
    group_edges: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type is FeatureType.CATEGORY:
            if not self.allowed:
                raise ValueError(f"{self.name}: a category needs its allowed values")
            if len(set(self.allowed)) != len(self.allowed):
                raise ValueError(f"{self.name}: allowed values repeat")
        elif self.allowed is not None:
            raise ValueError(f"{self.name}: only a category has allowed values")
        if self.type in (FeatureType.CATEGORY, FeatureType.BOOL) and (
            self.minimum is not None or self.maximum is not None
        ):
            raise ValueError(f"{self.name}: only numbers have a minimum or maximum")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"{self.name}: minimum is above maximum")
        if not self.model_input and not self.protected:
            raise ValueError(f"{self.name}: only protected attributes may be non-inputs")
        if self.group_edges is not None:
            if self.type not in (FeatureType.FLOAT, FeatureType.INT) or not self.protected:
                raise ValueError(f"{self.name}: group edges belong to numeric protected features")
            if self.group_edges != sorted(set(self.group_edges)):
                raise ValueError(f"{self.name}: group edges must increase")
        return self


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(min_length=2, max_length=1000)
    # The label whose rate fairness gates compare between groups (binary models), e.g. "bad".
    positive_label: str | None = None
    score: str = Field(default="probability", pattern="^probability$")
    description: str = Field(default="", max_length=300)

    @model_validator(mode="after")
    def _consistent(self) -> Output:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("output labels repeat")
        if self.positive_label is not None and self.positive_label not in self.labels:
            raise ValueError("positive_label is not one of the labels")
        return self


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: list[Feature] = Field(min_length=1, max_length=512)
    output: Output

    @model_validator(mode="after")
    def _unique_names(self) -> Signature:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names repeat")
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def input_width(self) -> int:
        return encoding.input_width(self.as_dict())

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)
