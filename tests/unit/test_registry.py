"""The registry helper every pluggable kind registers through (`kvswarm.registry`)."""

from __future__ import annotations

import pytest

from kvswarm.errors import ConfigError
from kvswarm.registry import Registry, UnknownNameError


def test_names_keep_registration_order() -> None:
    shapes: Registry[int] = Registry("load shape")
    for name, item in [("step", 1), ("constant", 2), ("burst", 3)]:
        shapes.register(name, item)
    assert shapes.names() == ("step", "constant", "burst")
    assert list(shapes.items()) == [("step", 1), ("constant", 2), ("burst", 3)]


def test_a_different_item_under_a_registered_name_is_refused() -> None:
    sinks: Registry[str] = Registry("record sink")
    sinks.register("csv", "first")
    with pytest.raises(ValueError, match="^record sink 'csv' is already registered$"):
        sinks.register("csv", "second")
    assert sinks.get("csv") == "first"


def test_the_same_item_registered_twice_is_accepted() -> None:
    sinks: Registry[str] = Registry("record sink")
    sinks.register("csv", "writer")
    assert sinks.register("csv", "writer") == "writer"
    assert sinks.names() == ("csv",)


def test_register_as_registers_the_decorated_class_and_returns_it() -> None:
    formats: Registry[type] = Registry("report format")

    @formats.register_as("markdown")
    class Markdown:
        pass

    assert formats.get("markdown") is Markdown
    assert "markdown" in formats


def test_an_unknown_name_is_a_one_line_error_listing_the_known_ones() -> None:
    formats: Registry[int] = Registry("report format")
    formats.register("markdown", 1)
    formats.register("html", 2)
    with pytest.raises(UnknownNameError) as caught:
        formats.get("pdf", where="--report")
    assert str(caught.value) == "--report: unknown report format 'pdf' (known: markdown, html)"
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, ValueError)


def test_the_listing_word_and_order_of_an_unknown_name_error_are_the_kinds() -> None:
    engines: Registry[int] = Registry("engine", listing="engines", sort_listing=True)
    engines.register("vllm", 1)
    engines.register("llama.cpp", 2)
    with pytest.raises(
        UnknownNameError, match=r"^unknown engine 'tgi' \(engines: llama.cpp, vllm\)$"
    ):
        engines.get("tgi")


def test_the_view_is_read_only_and_follows_later_registrations() -> None:
    shapes: Registry[int] = Registry("load shape")
    view = shapes.view
    shapes.register("step", 1)
    assert dict(view) == {"step": 1}
    with pytest.raises(TypeError):
        view["ramp"] = 2  # type: ignore[index]
