"""PHI scan of prepared records: find, count and (on request) redact identifiers before anything trains on them.

Why our own patterns: scrubadub, the usual library, is unmaintained since 2022 and pulls heavy dependencies, and the
seven types scanned here are formats, which regular expressions find well and testably (tests/test_privacy.py plants
each type and lists clinical text that must not match). What each type catches, and deliberately does not:

- email: `name@domain.tld`.
- phone: US numbers with separators (`(555) 123-4567`, `555-123-4567`, `555.123.4567`, `555 123 4567`), with an
  optional `+1` or `1-` prefix; international numbers written with `+` (8-15 digits); 10-11 bare digits only after
  `phone`, `tel`, `mobile` or `fax`. Not: other bare digit strings, `1-2-3`, `120/80`, ranges such as `3.5-5.0`.
- ssn: `123-45-6789`, and 9 digits after `SSN` or `social security number`; never numbers the SSA does not issue
  (area 000, 666 or 900-999, group 00, serial 0000).
- mrn: an identifier of 5+ letters, digits or hyphens, at least one a digit, after `MRN`, `medical record number` or
  `patient ID`. Not: unlabelled numbers (lab values, doses, ICD-10 codes such as E11.9 carry no such label).
- date_of_birth: a date (`12/03/1985`, `1985-03-12`, `March 12, 1985`, `12 March 1985`, `March 1985`, or a year)
  after `DOB`, `D.O.B.`, `date of birth`, `birth date` or `born (on|in)`. Not: any other date (`on 12/03/2021`,
  `in 2019`): a clinical timeline does not identify anyone by itself.
- street_address: a house number, capitalised words and a street suffix (`12 Oak Street`, `4B Elm Ave`, `9 5th Ave`).
  Not: `Dr. Smith` (no house number), a day and month before a title (`3 March Dr. Patel`), lower-case addresses.
- url: `http(s)://...` and `www....`.

Names, ages, zip codes and free-text locations are not detected: this is a safety net for data that should already
be de-identified, not a de-identification tool. Only the label is kept where a label marks the value (`MRN: [MRN]`).
What leaves this module (logs, stats, errors) names a record, a field and a type, never the matched text.
"""

from __future__ import annotations

import logging
import re
from typing import NamedTuple

from medtune.errors import DataError

log = logging.getLogger(__name__)

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATE = (
    rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})"
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}"
    rf"|{_MONTH},?\s+\d{{4}}|(?:19|20)\d{{2}})(?!\d)"
)
_SSN = r"(?!000|666|9\d\d)\d{3}(?P<sep>%s)(?!00)\d{2}(?P=sep)(?!0000)\d{4}"  # %s: the separator
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir"
    r"|Parkway|Pkwy|Highway|Hwy|Square|Sq|Crescent|Close)"
)
_STREET_WORD = r"(?:[A-Z][a-z'-]*[a-z]|\d+(?:st|nd|rd|th)|[NSEW]\.?)"  # Oak, O'Neil, 5th, N.
_MONTH_NAME = (  # "3 March Dr. Patel" is a date and a doctor, not an address
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)\b"
)

# type -> patterns, in priority order for overlapping matches; a group `v` marks the value after a label
PATTERNS: dict[str, list[re.Pattern]] = {
    "email": [re.compile(r"\b[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")],
    "url": [re.compile(r"(?i:\b(?:https?://|www\.))[^\s<>\"'()\[\]]*[^\s<>\"'()\[\].,;:!?]")],
    "ssn": [
        re.compile(rf"(?<![\w-]){_SSN % '-'}(?![\w-])"),
        re.compile(rf"(?i:\b(?:SSN|social\s+security\s+(?:number|no\.?)))[\s:#]*(?P<v>{_SSN % '[ -]?'})(?!\d)"),
    ],
    "phone": [
        re.compile(r"(?<![\w+.-])(?:\+?1[ .-]?)?(?:\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}([ .-])\d{3}\1\d{4})(?![\w-]|\.\d)"),
        re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d)){7,14}(?!\d)"),
        re.compile(r"(?i:\b(?:tele)?phone|\btel|\bmobile|\bfax)(?:\s+(?:no\.?|number))?[\s:#.]*(?P<v>\+?\d{10,11})\b"),
    ],
    "mrn": [
        re.compile(
            r"(?i:\b(?:MRN|medical\s+record\s+(?:number|no\.?|\#)|patient\s+(?:identifier|ID)))(?!\w)"
            r"[\s:#.]*(?:(?i:no\.?|number|is)\s*[:#]?\s*)?(?P<v>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{3,}[A-Za-z0-9])\b"
        )
    ],
    "date_of_birth": [
        re.compile(
            rf"\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|born(?:\s+(?:on|in))?)(?!\w)"
            rf"[\s:#,-]*(?:(?:is|was)\s+)?(?:the\s+)?(?P<v>{_DATE})",
            re.IGNORECASE,
        )
    ],
    "street_address": [
        re.compile(rf"\b\d{{1,6}}[A-Za-z]?\s+(?!{_MONTH_NAME})(?:{_STREET_WORD}\s+){{1,4}}{_STREET_SUFFIX}\b")
    ],
}
PHI_TYPES = ("email", "phone", "ssn", "mrn", "date_of_birth", "street_address", "url")  # order of stats.json
_GLUE = {"@", "/", ":", "-", "#", ".", "_", "+"}  # what a word splitter cuts out of e-mails, URLs, phones and dates


class PhiMatch(NamedTuple):
    type: str
    start: int
    end: int


def find_phi(text: str) -> list[PhiMatch]:
    """Possible identifiers in `text`, in order; of overlapping matches the earliest (then longest) is kept."""
    found = sorted(
        (
            PhiMatch(type_, *(m.span("v") if "v" in pattern.groupindex else m.span()))
            for type_, patterns in PATTERNS.items()
            for pattern in patterns
            for m in pattern.finditer(text)
        ),
        key=lambda m: (m.start, -m.end),
    )
    kept: list[PhiMatch] = []
    for match in found:
        if not kept or match.start >= kept[-1].end:
            kept.append(match)
    return kept


def placeholder(phi_type: str) -> str:
    return f"[{phi_type.upper()}]"


def redact(text: str, matches: list[PhiMatch] | None = None) -> str:
    """`text` with each identifier replaced by its placeholder, e.g. `call [PHONE]`."""
    for match in reversed(find_phi(text) if matches is None else matches):
        text = text[: match.start] + placeholder(match.type) + text[match.end :]
    return text


def find_phi_in_tokens(tokens: list[str]) -> tuple[list[PhiMatch], list[str]]:
    """Identifiers in a tokenised sentence, and the tokens with each one overlapping a match replaced by that
    match's placeholder (so tags stay aligned). Punctuation tokens such as `@ / : -` are rejoined to their
    neighbours first, because a word splitter cuts e-mails, URLs and phone numbers into pieces."""
    text, spans = "", []
    for i, token in enumerate(tokens):
        glued = i == 0 or token in _GLUE or token == ")" or tokens[i - 1] in _GLUE or tokens[i - 1] == "("
        text += "" if glued else " "
        spans.append((len(text), len(text) + len(token)))
        text += token
    matches = find_phi(text)
    redacted = [
        next((placeholder(m.type) for m in matches if m.start < end and start < m.end), token)
        for token, (start, end) in zip(tokens, spans, strict=True)
    ]
    return matches, redacted


def apply_phi_policy(records: list[dict], policy: str) -> tuple[list[dict], dict[str, int], list[str]]:
    """Scan every text field (and `tokens`, and the turns of a chat's `history`) of prepared records and apply
    `privacy.phi`.

    Returns the records (redacted with `redact`, else unchanged), the count of matches per type (every type, zeros
    included) and up to 10 locations as "record <id>, field <name>: <type>". `error` raises DataError naming the
    first record, field and type; `warn` logs one warning. The matched text itself is never logged or returned.
    """
    counts = dict.fromkeys(PHI_TYPES, 0)
    locations: list[str] = []
    first: tuple[str, str, str] | None = None
    kept = []
    for record in records:
        scanned = dict(record)
        for field, value in record.items():
            if field != "id" and isinstance(value, str):
                matches = find_phi(value)
                scanned[field] = redact(value, matches)
            elif field == "tokens":
                matches, scanned[field] = find_phi_in_tokens(value)
            elif field == "history":  # a chat record's earlier turns (medtune.data.chat_fields)
                found = [find_phi(turn["content"]) for turn in value]
                matches = [match for turn_matches in found for match in turn_matches]
                scanned[field] = [
                    {**turn, "content": redact(turn["content"], turn_matches)}
                    for turn, turn_matches in zip(value, found, strict=True)
                ]
            else:
                continue
            for match in matches:
                counts[match.type] += 1
                first = first or (record["id"], field, match.type)
                if len(locations) < 10:
                    locations.append(f"record {record['id']}, field {field}: {match.type}")
        kept.append(scanned if policy == "redact" else record)
    if first is None:
        return kept, counts, locations
    summary = ", ".join(f"{phi_type} {n}" for phi_type, n in counts.items() if n)
    if policy == "error":
        record_id, field, phi_type = first
        raise DataError(
            f"record {record_id}",
            f"field {field} holds a possible {phi_type} (PHI scan of the dataset: {summary}). Remove identifiers "
            "from the source, or set privacy.phi=redact to replace them with placeholders such as [PHONE]",
        )
    if policy == "warn":
        log.warning(
            "PHI scan: possible identifiers kept as they are (%s), e.g. %s. For real patient data set "
            "privacy.phi=redact or privacy.phi=error",
            summary,
            "; ".join(locations[:3]),
        )
    else:
        log.info("PHI scan: redacted %s", summary)
    return kept, counts, locations
