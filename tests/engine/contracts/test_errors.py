from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from engine.contracts.errors import error_lines, error_list


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int

    @field_validator("n")
    @classmethod
    def _n(cls, v):
        if v < 0:
            raise ValueError("must be >= 0")
        return v


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    items: list[Inner] = []


def errors_of(data) -> list[dict]:
    with pytest.raises(ValidationError) as err:
        Outer.model_validate(data)
    return err.value.errors()


@pytest.mark.parametrize("data, line", [
    ({}, "name: required"),
    ({"name": "x", "colour": 1}, "colour: unknown field"),
    ({"name": "x", "items": [{"n": -1}]}, "items.0.n: must be >= 0"),
    ({"name": "x", "items": [{"n": "a"}]}, "items.0.n: Input should be a valid integer, unable to parse string as an"),
])
def test_error_lines_when_a_field_fails_then_its_path_and_our_wording(data, line):
    (got,) = error_lines(errors_of(data))
    assert got.startswith(line)


def test_error_list_when_an_error_is_built_by_hand_then_it_gets_a_type_and_a_list_loc():
    assert error_list([{"loc": ("query", "cursor"), "msg": "bad"}]) == [
        {"loc": ["query", "cursor"], "msg": "bad", "type": "value_error"}]


def test_error_lines_when_the_error_is_about_the_whole_input_then_whole_names_it():
    assert error_lines(errors_of([1]), whole="config") == ["config: Input should be a valid dictionary or instance of Outer"]
