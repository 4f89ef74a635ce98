"""deqlib.recorded: results found in a checkout, downloaded (a real file:// download) where there is none, and
clear errors for a bad name, a missing file and a failed download."""

from __future__ import annotations

import json

import pytest

from deqlib import recorded

NAME = "test_only_recorded_results.json"  # no such file in the repository


def test_a_checkout_above_the_working_directory_is_found(tmp_path, monkeypatch):
    folder = tmp_path / "experiments" / "results"
    folder.mkdir(parents=True)
    (folder / NAME).write_text(json.dumps({"where": "checkout"}))
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # a chapter runs in notebooks/
    monkeypatch.setenv(recorded.RESULTS_URL_ENV, "file:///nonexistent")
    assert recorded.load_results(NAME) == {"where": "checkout"}


def test_without_a_checkout_the_file_is_downloaded(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    (served / NAME).write_text(json.dumps({"where": "repository"}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(recorded.RESULTS_URL_ENV, served.as_uri())
    assert recorded.load_results(NAME) == {"where": "repository"}


def test_missing_files_and_failed_downloads_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(recorded.RESULTS_URL_ENV, raising=False)
    with pytest.raises(recorded.RecordedResultsError, match="python experiments/test_only_recorded_results.py"):
        recorded.load_results(NAME)
    monkeypatch.setenv(recorded.RESULTS_URL_ENV, (tmp_path / "empty").as_uri())
    with pytest.raises(recorded.RecordedResultsError, match="could not download"):
        recorded.load_results(NAME)
    for bad in ("../secrets.json", "results.txt", 3):
        with pytest.raises(ValueError, match="plain file name"):
            recorded.load_results(bad)


def test_the_chapters_results_are_found_in_this_checkout(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nowhere near the checkout: found beside the package
    monkeypatch.delenv(recorded.RESULTS_URL_ENV, raising=False)
    assert "runs" in recorded.load_results("attacks_mnist5k.json")
