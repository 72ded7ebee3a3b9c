"""The ``analyze`` task type: statistics of numbers, a quick reading of a text."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from clawd.config import Config
from clawd.errors import BadInput
from clawd.handler import TaskContext
from clawd.handlers import analyze as analyze_plugin
from clawd.handlers.analyze import analyze
from clawd.plugins import Plugins


def run(data: Any) -> Any:
    return analyze(TaskContext(id="t1", type="analyze", input=data))


def test_numbers() -> None:
    assert run([3, 1, 2]) == {
        "count": 3,
        "sum": 6,
        "mean": 2,
        "median": 2,
        "min": 1,
        "max": 3,
        "stdev": 1.0,
    }


def test_numbers_mixed_and_even_count() -> None:
    values = [1.5, 4, -2, 10.25]
    out = run(values)
    assert out["count"] == 4
    assert out["sum"] == pytest.approx(13.75)
    assert out["mean"] == pytest.approx(13.75 / 4)
    assert out["median"] == pytest.approx((1.5 + 4) / 2)
    assert (out["min"], out["max"]) == (-2, 10.25)
    assert out["stdev"] == pytest.approx(statistics.stdev(values))


def test_one_number_has_zero_stdev() -> None:
    out = run([7])
    assert out["stdev"] == 0
    assert out["mean"] == out["median"] == out["min"] == out["max"] == out["sum"] == 7


def test_float_sum_keeps_small_terms() -> None:
    assert run([1e16, 1.0, -1e16])["sum"] == 1.0


def test_wrapped_inputs() -> None:
    assert run({"numbers": [1, 2]})["count"] == 2
    assert run({"text": "hello world"})["words"] == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "empty list"),
        ([1, "2", 3], "element 1 is str '2', not a number"),
        ([1, 2, None], "element 2 is NoneType None"),
        ([True, 1], "element 0 is bool True"),
        ([1, [2]], "element 1 is list"),
        ([1, float("nan")], "element 1 is nan, not a finite number"),
        ({"numbers": "1 2 3"}, '"numbers" must be a list'),
        ({"text": 5}, '"text" must be a string'),
        ({"numbers": [1], "text": "x"}, "got an object with keys ['numbers', 'text']"),
        ({}, "got an object with keys []"),
        (42, "got int"),
        (None, "got NoneType"),
    ],
)
def test_bad_input_names_what_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(BadInput) as info:
        run(data)
    assert message in info.value.message
    assert info.value.retryable is False


def test_overflowing_numbers_are_bad_input() -> None:
    with pytest.raises(BadInput, match="floating point"):
        run([1e308, 1e308])


def test_text_counts() -> None:
    out = run("The quick brown fox.\nThe lazy dog!\n")
    assert out["chars"] == 35
    assert out["words"] == 7
    assert out["lines"] == 2


def test_empty_text() -> None:
    assert run("") == {
        "chars": 0,
        "words": 0,
        "lines": 0,
        "top_words": [],
        "sentiment": {"score": 0.0, "label": "neutral"},
    }


def test_top_words_are_lowercased_counted_and_skip_stopwords() -> None:
    text = "Cat cat CAT dog dog the the the the and of bird, Bird's nest. Don't it's"
    top = run(text)["top_words"]
    assert top[:2] == [["cat", 3], ["dog", 2]]
    words = [w for w, _ in top]
    assert "the" not in words and "and" not in words and "of" not in words
    assert "don't" not in words and "it's" not in words  # contractions of stopwords
    assert ["bird", 1] in top and ["bird's", 1] in top


def test_top_words_are_at_most_ten_and_ties_are_alphabetical() -> None:
    words = [f"word{letter}" for letter in "onmlkjihgfedcba"]  # 15 words, once each
    top = run(" ".join(words) + " wordz wordz")["top_words"]
    assert len(top) == 10
    assert top[0] == ["wordz", 2]
    assert [w for w, _ in top[1:]] == sorted(words)[:9]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("This is great, I love it. Excellent work!", "positive"),
        ("Terrible. The build is broken and the docs are awful.", "negative"),
        ("The meeting is on Tuesday at noon.", "neutral"),
        ("This is not good.", "negative"),
        ("I don't like it.", "negative"),
        ("Not bad at all!", "positive"),
        ("It never fails.", "positive"),
    ],
)
def test_sentiment_labels(text: str, label: str) -> None:
    sentiment = run(text)["sentiment"]
    assert sentiment["label"] == label
    assert -1 <= sentiment["score"] <= 1


def test_sentiment_score_is_bounded_however_long_the_text() -> None:
    assert 0.99 < run("excellent " * 10_000)["sentiment"]["score"] <= 1
    assert -1 <= run("awful " * 10_000)["sentiment"]["score"] < -0.99


def test_registered_as_a_plugin() -> None:
    plugins = Plugins(Config())
    plugins.register_object(analyze_plugin, "analyze")
    plugins.collect()
    spec = plugins.handlers["analyze"]
    assert spec.isolation == "thread"
    assert spec.func(TaskContext(id="t", type="analyze", input=[1, 2, 3]))["mean"] == 2
