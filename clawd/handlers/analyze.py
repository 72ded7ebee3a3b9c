"""Task type ``analyze``: summary statistics of numbers, or a quick look at a text.

    [3, 1, 2]          -> {"count": 3, "sum": 6, "mean": 2, "median": 2, "min": 1,
                           "max": 3, "stdev": 1.0}
    "Great job, team!" -> {"chars": 16, "words": 3, "lines": 1,
                           "top_words": [["great", 1], ["job", 1], ["team", 1]],
                           "sentiment": {"score": 0.4588, "label": "positive"}}

The input may also be ``{"numbers": [...]}`` or ``{"text": "..."}``. ``stdev`` is the
sample standard deviation (0 for a single value). Sentiment comes from a small built-in
word list with negation ("not good" counts as negative): a rough signal, not a model.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from typing import Any

from clawd import hookimpl
from clawd.errors import BadInput
from clawd.handler import TaskContext

TOP_WORDS = 10


#: words too common to say anything about a text; left out of ``top_words``
STOPWORDS = frozenset(
    """
    a about after all also am an and any are as at be been being but by can could did do
    does doing for from had has have having he her here hers him his how i if in into is it
    its itself just me more most my no nor not of off on once only or other our ours out
    over own same she should so some such than that the their theirs them then there these
    they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours im ive id ill youre youve theyre
    thats theres lets
    """.split()  # noqa: SIM905 -- a word list reads better as text
)

_WEIGHTS = {
    3: "amazing awesome brilliant excellent fantastic outstanding perfect superb wonderful "
    "love loved loves delightful",
    2: "great good happy nice glad pleased enjoy enjoyed liked beautiful best better easy "
    "success successful thanks thank win won helpful recommend impressive reliable smooth "
    "solid",
    1: "like ok okay fine fair calm ready stable useful safe agree fast clean clear fixed "
    "works working",
    -1: "slow hard confusing unclear late wrong problem problems issue issues bug bugs "
    "missing difficult annoying unstable",
    -2: "bad poor sad angry fail failed fails failure broken error errors crash crashed ugly "
    "hate hated worse disappointed disappointing useless slowest dislike unhappy",
    -3: "awful terrible horrible worst disaster disgusting hopeless catastrophic",
}
#: word -> weight in [-3, 3]; a small general-purpose lexicon in the spirit of AFINN
LEXICON: dict[str, int] = {
    word: weight for weight, words in _WEIGHTS.items() for word in words.split()
}

#: a word that flips the sentiment of the next sentiment word within a few words
#: ("not good", "never works"); contractions are looked up without their apostrophe
NEGATIONS = frozenset(
    """
    not no never none nobody nothing neither nor without cannot isnt arent wasnt werent
    dont doesnt didnt wont wouldnt shouldnt cant couldnt hardly
    """.split()  # noqa: SIM905
)
_NEGATION_REACH = 3  # words after a negation that it still applies to
_ALPHA = 15.0  # normalisation as in VADER: score / sqrt(score^2 + alpha) lies in (-1, 1)
_NEUTRAL_BAND = 0.05

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


# -- numbers -----------------------------------------------------------------------------


def analyze_numbers(values: list[Any]) -> dict[str, Any]:
    """count, sum, mean, median, min, max and sample stdev of a non-empty list."""
    if not values:
        raise BadInput("analyze needs at least one number, got an empty list")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadInput(
                f"element {i} is {type(v).__name__} {_show(v)}, not a number "
                "(analyze takes a list of numbers, or a text)"
            )
        if isinstance(v, float) and not math.isfinite(v):
            raise BadInput(f"element {i} is {v}, not a finite number")
    try:
        result = {
            "count": len(values),
            # all ints: exact; any float: fsum, which does not lose the small terms
            "sum": sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values),
            "mean": statistics.mean(values),
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    except OverflowError:
        raise BadInput("numbers too large to summarise as floating point") from None
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInput(f"{key} of these numbers overflows floating point")
    return result


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# -- text --------------------------------------------------------------------------------


def _bare(word: str) -> str:
    # "don't" and "don’t" both look up as "dont"
    return word.replace("'", "").replace("’", "")


def sentiment(words: list[str]) -> dict[str, Any]:
    """Score lower-cased words in [-1, 1] with the lexicon; label it."""
    raw = 0.0
    negated_for = 0
    for word in words:
        bare = _bare(word)
        weight = LEXICON.get(bare, 0)
        if weight:
            raw += -weight if negated_for else weight
            negated_for = 0  # a negation applies to the next sentiment word only
        elif bare in NEGATIONS:
            negated_for = _NEGATION_REACH
            continue
        negated_for = max(0, negated_for - 1)
    score = raw / math.sqrt(raw * raw + _ALPHA) if raw else 0.0
    if score >= _NEUTRAL_BAND:
        label = "positive"
    elif score <= -_NEUTRAL_BAND:
        label = "negative"
    else:
        label = "neutral"
    return {"score": round(score, 4), "label": label}


def analyze_text(text: str) -> dict[str, Any]:
    """chars, words, lines, the most frequent words, and a sentiment score."""
    words = [w.lower() for w in _WORD.findall(text)]
    counts = Counter(
        w for w in words if len(w) > 1 and _bare(w) not in STOPWORDS and _bare(w) not in NEGATIONS
    )
    # most frequent first, then alphabetical, so equal counts come out the same every time
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_WORDS]
    return {
        "chars": len(text),
        "words": len(text.split()),
        "lines": len(text.splitlines()),
        "top_words": [[w, n] for w, n in top],
        "sentiment": sentiment(words),
    }


# -- the handler -------------------------------------------------------------------------


def analyze(ctx: TaskContext) -> dict[str, Any]:
    """The ``analyze`` handler: a list of numbers or a text, bare or in an object."""
    data = ctx.input
    if isinstance(data, dict):
        keys = set(data)
        if keys == {"numbers"}:
            data = data["numbers"]
            if not isinstance(data, list):
                raise BadInput(f'"numbers" must be a list, got {type(data).__name__}')
        elif keys == {"text"}:
            data = data["text"]
            if not isinstance(data, str):
                raise BadInput(f'"text" must be a string, got {type(data).__name__}')
        else:
            raise BadInput(
                'analyze takes {"numbers": [...]} or {"text": "..."}, '
                f"got an object with keys {sorted(keys)}"
            )
    if isinstance(data, list):
        return analyze_numbers(data)
    if isinstance(data, str):
        return analyze_text(data)
    raise BadInput(f"analyze needs a list of numbers or a text, got {type(data).__name__}")


@hookimpl
def clawd_register_handlers(register: Any, config: Any) -> None:
    """Register the ``analyze`` task type."""
    register(
        "analyze",
        analyze,
        timeout=10,
        isolation="thread",
        description="numbers -> count/sum/mean/median/min/max/stdev; text -> words, sentiment",
    )
