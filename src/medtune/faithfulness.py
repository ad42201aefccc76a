"""Faithfulness of a rewritten text to its source: the quantities and medicines it keeps, changes or invents, and
whether it copied the source instead of rewriting it.

For patient-facing text the error that matters most is a changed dose ("5 mg every 6 hours" becoming "5 tablets
every 6 hours"), which SARI, BLEU and ROUGE-L do not see. Here a quantity is a number (digits, a decimal, a range
such as "2 to 3" or "2-3", or a word: "two", "twice") with its unit, or a dosing frequency ("every 6 hours",
"three times a day", "bid", "q6h"). Masses and volumes are compared in one unit (0.5 g is 500 mg; 5 g is not
5 mg). A source quantity is
- preserved when the output has the same value in the same unit,
- altered when it is not, but the output has a left-over quantity with the same number or the same kind of unit
  (a changed number or a changed unit),
- and an output quantity that matches no source quantity is invented.
Medicines are names from an authored lexicon of common generic drug names (`medications.txt` beside this module);
a name in the output that is not in the source is invented.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

NUMBER_WORDS = {
    "half": 0.5, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "hundred": 100,
}  # fmt: skip
# unit as written -> (canonical unit, factor to it): masses in mg, volumes in ml, durations by their own name
UNITS = {
    **dict.fromkeys(("mg", "milligram", "milligrams"), ("mg", 1.0)),
    **dict.fromkeys(("g", "gram", "grams"), ("mg", 1000.0)),
    **dict.fromkeys(("mcg", "µg", "ug", "microgram", "micrograms"), ("mg", 0.001)),
    **dict.fromkeys(("kg", "kilogram", "kilograms"), ("kg", 1.0)),  # body weight, not a dose: kept apart
    **dict.fromkeys(("ml", "millilitre", "millilitres", "milliliter", "milliliters"), ("ml", 1.0)),
    **dict.fromkeys(("l", "litre", "litres", "liter", "liters"), ("ml", 1000.0)),
    **dict.fromkeys(("unit", "units", "iu"), ("unit", 1.0)),
    **dict.fromkeys(("tablet", "tablets", "tab", "tabs", "pill", "pills"), ("tablet", 1.0)),
    **dict.fromkeys(("capsule", "capsules", "caps"), ("capsule", 1.0)),
    **dict.fromkeys(("puff", "puffs"), ("puff", 1.0)),
    **dict.fromkeys(("drop", "drops"), ("drop", 1.0)),
    **dict.fromkeys(("minute", "minutes", "min", "mins"), ("minute", 1.0)),
    **dict.fromkeys(("hour", "hours", "hr", "hrs", "h"), ("hour", 1.0)),
    **dict.fromkeys(("day", "days"), ("day", 1.0)),
    **dict.fromkeys(("week", "weeks"), ("week", 1.0)),
    **dict.fromkeys(("month", "months"), ("month", 1.0)),
    **dict.fromkeys(("year", "years"), ("year", 1.0)),
    "%": ("%", 1.0),
    "mmhg": ("mmHg", 1.0),
    "mmol/l": ("mmol/l", 1.0),
    "mg/dl": ("mg/dl", 1.0),
    "bpm": ("bpm", 1.0),
}
LATIN_FREQUENCIES = {"qd": 1, "od": 1, "bid": 2, "bd": 2, "tid": 3, "tds": 3, "qid": 4, "qds": 4}
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"
_RANGE = rf"(?P<n>{_NUMBER})(?:\s*(?:-|–|to)\s*(?P<m>{_NUMBER}))?"
_UNIT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
_INTERVAL_UNIT = r"(?P<unit>hours?|hrs?|h|minutes?|mins?|days?|weeks?)"
# (canonical unit, or "" to take it from the `unit` group; pattern), tried in this order: a span one pattern read
# is not read again by a later one ("every 6 hours" is an interval, not also "6 hours")
_PATTERNS = [
    ("per day", re.compile(
        rf"\b(?:(?P<word>once|twice|thrice)|{_RANGE}(?:\s+times?|\s*x))\s*(?:a\s+day|per\s+day|each\s+day|daily|/\s*day)\b",
        re.I,
    )),
    ("per day", re.compile(rf"\b(?P<latin>{'|'.join(LATIN_FREQUENCIES)})\b", re.I)),
    ("every", re.compile(rf"\bevery\s+{_RANGE}\s*{_INTERVAL_UNIT}\b", re.I)),
    ("every", re.compile(r"\bq\s*(?P<n>\d+)\s*(?P<unit>h)\b", re.I)),  # q6h: every 6 hours
    ("", re.compile(rf"{_RANGE}\s*(?P<unit>{_UNIT})(?![\w/])", re.I)),  # 5 mg, 2 to 3 tablets, 40%, 10 mmol/L
]  # fmt: skip
_ONCE_TWICE = {"once": 1, "twice": 2, "thrice": 3}


@dataclass(frozen=True)
class Quantity:
    value: tuple[float, ...]  # one number, or the two ends of a range, in `unit`
    unit: str

    def __str__(self) -> str:
        return f"{'-'.join(f'{v:g}' for v in self.value)} {self.unit}"


def quantities(text: str) -> list[Quantity]:
    """The quantities written in `text`, left to right, each once (a span matched by an earlier pattern is not
    read again: "twice a day" is one frequency, not also a bare "twice")."""
    found, taken = [], []
    for unit, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            if not any(match.start() < end and start < match.end() for start, end in taken):
                found.append((match.start(), _quantity(match, unit)))
                taken.append(match.span())
    return [q for _, q in sorted(found, key=lambda pair: pair[0])]


def _quantity(match: re.Match, unit: str) -> Quantity:
    groups = match.groupdict()
    if groups.get("latin"):
        return Quantity((float(LATIN_FREQUENCIES[groups["latin"].lower()]),), "per day")
    if groups.get("word"):
        return Quantity((float(_ONCE_TWICE[groups["word"].lower()]),), "per day")
    numbers = [_number(groups[k]) for k in ("n", "m") if groups.get(k)]
    factor = 1.0
    if unit == "every":
        unit = f"every {UNITS[groups['unit'].lower()][0]}"
    elif not unit:
        unit, factor = UNITS[groups["unit"].lower()]
    return Quantity(tuple(round(n * factor, 6) for n in numbers), unit)


def _number(text: str) -> float:
    text = text.lower()
    return float(NUMBER_WORDS[text]) if text in NUMBER_WORDS else float(text.replace(",", ""))


@dataclass(frozen=True)
class Comparison:
    preserved: int
    altered: int
    dropped: int
    invented: int
    source_total: int
    output_total: int


def compare_quantities(source: str, output: str) -> Comparison:
    """How the output treats the source's quantities (see the module docstring)."""
    left_source, left_output = Counter(quantities(source)), Counter(quantities(output))
    source_total, output_total = sum(left_source.values()), sum(left_output.values())
    kept = left_source & left_output
    left_source, left_output = left_source - kept, left_output - kept
    altered = 0
    for s in list(left_source.elements()):
        partner = next((o for o in left_output.elements() if o.value == s.value or o.unit == s.unit), None)
        if partner is not None:
            altered += 1
            left_source[s] -= 1
            left_output[partner] -= 1
    left_source, left_output = +left_source, +left_output
    return Comparison(
        preserved=sum(kept.values()),
        altered=altered,
        dropped=sum(left_source.values()),
        invented=sum(left_output.values()),
        source_total=source_total,
        output_total=output_total,
    )


@cache
def medication_names() -> frozenset[str]:
    """The authored lexicon: lower-case generic names, one per line (# starts a comment)."""
    lines = (Path(__file__).with_name("medications.txt")).read_text(encoding="utf-8").splitlines()
    return frozenset(line.split("#")[0].strip().lower() for line in lines if line.split("#")[0].strip())


def medications(text: str) -> set[str]:
    """The lexicon's medicines named in `text` (whole words, any case)."""
    return set(re.findall(r"[a-z][a-z-]+", text.lower())) & medication_names()


def normalised(text: str) -> list[str]:
    """Lower-case words, punctuation and spacing ignored: what copy detection compares."""
    return re.findall(r"\w+", text.lower())


def word_edit_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance counted in words (insert, delete, substitute one word)."""
    previous = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1]


def copy_distance(source: str, output: str) -> float:
    """Word edit distance between output and source over the longer one's length: 0 is a copy, 1 all rewritten."""
    a, b = normalised(source), normalised(output)
    return word_edit_distance(a, b) / max(len(a), len(b), 1)
