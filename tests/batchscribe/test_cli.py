"""The CLI's argument handling (end-to-end CLI runs live in tests/flows/)."""

from __future__ import annotations

import argparse

import pytest

from batchscribe.cli import build_parser, parse_size, request_from_args
from batchscribe.options import BatchRequest, TranscribeOptions


def test_cli_defaults_are_the_options_defaults() -> None:
    request = request_from_args(build_parser().parse_args(["run", "talk.mp3", "-o", "out"]))
    assert request.transcribe == TranscribeOptions()
    assert request.max_workers == BatchRequest.model_fields["max_workers"].default
    assert request.max_input_bytes is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1000", 1000), ("500M", 500 << 20), ("2G", 2 << 30), ("2gb", 2 << 30), ("1.5GiB", 3 << 29), ("64k", 65536)],
)
def test_sizes_parse_in_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-5M", "0", "2X"])
def test_bad_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_size_cap_reaches_the_request() -> None:
    args = build_parser().parse_args(["run", "s3://media/", "-o", "out", "--max-input-size", "2G"])
    assert request_from_args(args).max_input_bytes == 2 << 30
