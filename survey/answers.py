"""Survey answers: reading a score from keys, speech or an SMS, storing it once, STOP.

Functions take the session first and ``now`` (aware UTC); none commits.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from line_config import LineConfig, normalise_number
from survey.models import SmsOutbox, SurveyInvitation, SurveyOptOut, SurveyResponse

log = logging.getLogger(__name__)

# A reply that is one whole number 0–10, with any whitespace or punctuation around it
# ("  9!", "10.", "(7)"), but not a negative or a decimal ("-5", "9.5").
_SCORE_RE = re.compile(r"^[\s!-,./:-@\[-`{-~«»„“”‚‘’…–—]*?([0-9]{1,2})[\s!-/:-@\[-`{-~«»„“”‚‘’…–—]*$")
# Opt-out keywords, as the whole message: Twilio's standard set, Estonian (STOPP, LOPETA) and
# Russian (СТОП, СТОПП, ОТПИСАТЬСЯ, ОТПИСКА), compared in upper case after normalise_text.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "STOPP",
                        "LOPETA", "СТОП", "СТОПП", "ОТПИСАТЬСЯ", "ОТПИСКА"})
# Anything but letters and digits around a keyword (punctuation, symbols, emoji, spaces).
_EDGES_RE = re.compile(r"^[\W_]+|[\W_]+$")

# Spoken scores the IVR accepts (speech recognition gives words or digits).
SPOKEN_SCORES = {
    "ru": {"ноль": 0, "нуль": 0, "один": 1, "одна": 1, "два": 2, "две": 2, "три": 3,
           "четыре": 4, "пять": 5, "шесть": 6, "семь": 7, "восемь": 8, "девять": 9,
           "десять": 10},
    "en": {"zero": 0, "nought": 0, "nil": 0, "one": 1, "two": 2, "three": 3, "four": 4,
           "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10},
}
SPOKEN_YES_NO = {"ru": {"да": True, "нет": False}, "en": {"yes": True, "no": False}}
# Words that make a phrase a number outside 0–10 (or not a whole number): a phrase with one
# of them is asked again, never read as the 0–10 word beside it ("one hundred", "minus five",
# "twenty five", "five point five"). Russian stems match any ending (сто, ста, тысяча, тысячи…).
_OUT_OF_RANGE_WORDS = frozenset({
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty", "thirty", "forty", "fourty", "fifty", "sixty", "seventy", "eighty",
    "ninety", "hundred", "hundreds", "thousand", "thousands", "million", "millions", "billion",
    "minus", "negative", "point", "half", "percent", "per",
    "сто", "ста", "минус", "полтора", "половина", "процент", "процентов", "процента",
})
_OUT_OF_RANGE_STEMS = ("одиннадцат", "двенадцат", "тринадцат", "четырнадцат", "пятнадцат",
                       "шестнадцат", "семнадцат", "восемнадцат", "девятнадцат", "двадцат",
                       "тридцат", "сорок", "пятьдесят", "шестьдесят", "семьдесят",
                       "восемьдесят", "девяност", "двест", "трист", "четырест", "пятьсот",
                       "шестьсот", "семьсот", "восемьсот", "девятьсот", "тысяч", "миллион",
                       "миллиард", "отрицательн", "целых", "запят", "десятых")
# A minus sign before a number ("-5", "− 5") or a decimal ("5.5", "7,5").
_NEGATIVE_OR_DECIMAL_RE = re.compile(r"[-−–—]\s*\d|\d\s*[.,]\s*\d")


def normalise_text(text: str | None) -> str:
    """An incoming text as the parsers read it: NFKC (full-width digits and letters, Unicode
    spaces such as NBSP become plain ones), format characters (category Cf: zero-width spaces,
    joiners, direction marks, BOM) removed, and surrounding whitespace stripped."""
    text = unicodedata.normalize("NFKC", text or "")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text.strip()


def parse_sms_score(body: str) -> int | None:
    """The score 0–10 in an SMS reply, or None if the reply is anything else.

    >>> [parse_sms_score(b) for b in ("  9!", "10.", "0", "11", "-5", "9.5", "ten")]
    [9, 10, 0, None, None, None, None]
    """
    body = normalise_text(body)
    match = _SCORE_RE.match(body)
    if match is None:
        return None
    head = body[:match.start(1)].rstrip()
    if head.endswith(("-", "−", "–")):  # a minus sign: "-5" is not 5
        return None
    tail = body[match.end(1):]
    if tail[:1] in (".", ",") and tail[1:2].isdigit():
        return None
    value = int(match.group(1))
    return value if 0 <= value <= 10 else None


def is_stop(body: str) -> bool:
    """True if the message is an opt-out keyword (STOP, СТОП, … in any letter case, after
    :func:`normalise_text`, punctuation and symbols around it ignored).

    >>> [is_stop(b) for b in ("stop!", "СТОП", "STOP\u00a0", "\u200bSTOP", "stop it")]
    [True, True, True, True, False]
    """
    return _EDGES_RE.sub("", normalise_text(body)).upper() in STOP_WORDS


def parse_keypad_score(digits: str | None) -> int | None:
    """The score in the keys of the IVR question (``numDigits=2``, ``#`` ends): "0"…"9" and
    "10"; None for nothing, "11"…"99" or two digits starting with 0 (a slip, asked again)."""
    digits = (digits or "").strip().rstrip("#")
    if not digits.isdigit() or not digits.isascii():
        return None
    if len(digits) == 1:
        return int(digits)
    return 10 if digits == "10" else None


def parse_spoken_score(phrase: str | None, language: str) -> int | None:
    """The score in a recognised phrase ("ten", "десять", "7"); None unless exactly one, and
    None for a phrase naming a number outside 0–10 or not whole ("one hundred percent",
    "minus five", "twenty five", "-5", "5.5"): asked again.

    >>> [parse_spoken_score(p, "en") for p in ("ten", "a hundred and one", "minus five")]
    [10, None, None]
    """
    phrase = normalise_text(phrase).lower()
    if _NEGATIVE_OR_DECIMAL_RE.search(phrase):
        return None
    words = re.findall(r"\w+", phrase)
    if any(w in _OUT_OF_RANGE_WORDS or w.startswith(_OUT_OF_RANGE_STEMS) for w in words):
        return None
    found = set()
    for word in words:
        if word.isdigit() and word.isascii():
            found.add(int(word))
        elif word in SPOKEN_SCORES.get(language, {}):
            found.add(SPOKEN_SCORES[language][word])
    if len(found) != 1:
        return None
    value = found.pop()
    return value if 0 <= value <= 10 else None


def parse_resolved(digits: str | None, phrase: str | None, language: str) -> bool | None:
    """"Was your question resolved?": key 1 or "yes"/"да" → True, 2 or "no"/"нет" → False."""
    digits = (digits or "").strip()
    if digits in ("1", "2"):
        return digits == "1"
    words = set(re.findall(r"\w+", (phrase or "").lower()))
    answers = {v for w, v in SPOKEN_YES_NO.get(language, {}).items() if w in words}
    return answers.pop() if len(answers) == 1 else None


def store_score(session: Session, invitation: SurveyInvitation, score: int, now: datetime, *,
                message_sid: str | None = None) -> SurveyResponse | None:
    """Store the answer ``score`` (0–10) of ``invitation``'s call, attributed to the
    invitation's agent and queue. Returns None, storing nothing, if the call already has an
    answer or ``message_sid`` was stored before (a repeated delivery). ValueError outside 0–10."""
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10:
        raise ValueError(f"an NPS answer is an integer 0–10, not {score!r}")
    response = SurveyResponse(call_id=invitation.call_id, invitation_id=invitation.id,
                              agent_id=invitation.agent_id, queue_id=invitation.queue_id,
                              language=invitation.language, channel=invitation.channel,
                              score=score, received_at=now, message_sid=message_sid)
    try:
        with session.begin_nested():
            session.add(response)
            session.flush()
    except IntegrityError:
        return None
    invitation.state, invitation.answered_at = "answered", now
    # The call is answered: a survey SMS of the call not yet sent is not sent any more.
    pending = select(SmsOutbox.invitation_id).join(
        SurveyInvitation, SurveyInvitation.id == SmsOutbox.invitation_id).where(
        SurveyInvitation.call_id == invitation.call_id, SmsOutbox.state == "pending")
    canceled = list(session.scalars(pending))
    if canceled:
        session.execute(update(SmsOutbox).where(SmsOutbox.invitation_id.in_(canceled),
                                                SmsOutbox.state == "pending")
                        .values(state="canceled", last_error="call already answered"),
                        execution_options={"synchronize_session": False})
        session.execute(update(SurveyInvitation).where(SurveyInvitation.id.in_(canceled),
                                                       SurveyInvitation.state == "queued")
                        .values(state="skipped", reason="answered"),
                        execution_options={"synchronize_session": False})
    return response


def response_of(session: Session, call_id: int) -> SurveyResponse | None:
    """The stored answer of the call, or None."""
    return session.scalar(select(SurveyResponse).where(SurveyResponse.call_id == call_id))


@dataclass(frozen=True)
class SmsReply:
    """What to answer an incoming SMS: ``text`` (None: an empty response) and what happened:
    ``stored``, ``duplicate``, ``clarify``, ``ignored`` (nothing to do), ``late`` (outside
    the reply window), ``opted_out`` (from an opted-out number: no answer), ``stop``."""

    outcome: str
    text: str | None = None


def opt_out(session: Session, number: str, now: datetime, *, message_sid: str | None,
            body: str) -> bool:
    """Opt ``number`` (E.164) out for good and cancel its unsent survey SMS; False if it was
    already opted out."""
    if session.scalar(select(SurveyOptOut.id).where(SurveyOptOut.number == number)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(SurveyOptOut(number=number, opted_out_at=now, source="sms",
                                     message_sid=(message_sid or None) and message_sid[:64],
                                     body=(body or "")[:160]))
            session.flush()
    except IntegrityError:
        return False
    # Unsent messages, including one a worker has claimed (``sending``: alive, it re-checks
    # before calling the provider; dead, the row is not claimed again). Their invitations
    # become skipped (opted_out).
    unsent = list(session.scalars(select(SmsOutbox.invitation_id).where(
        SmsOutbox.to_number == number, SmsOutbox.state.in_(("pending", "sending")))))
    if unsent:
        session.execute(update(SmsOutbox).where(SmsOutbox.invitation_id.in_(unsent),
                                                SmsOutbox.state.in_(("pending", "sending")))
                        .values(state="canceled", lease_until=None, claim_token=None,
                                last_error="opted out"),
                        execution_options={"synchronize_session": False})
        session.execute(update(SurveyInvitation).where(SurveyInvitation.id.in_(unsent),
                                                       SurveyInvitation.state == "queued")
                        .values(state="skipped", reason="opted_out"),
                        execution_options={"synchronize_session": False})
    log.info("survey opt-out: %s sent %r (message %s)", number, (body or "")[:40], message_sid)
    return True


def handle_sms(session: Session, config: LineConfig, from_number: str, body: str,
               message_sid: str, now: datetime) -> SmsReply:
    """Handle an incoming SMS from ``from_number``: STOP opts out; a score 0–10 answers the
    number's latest survey SMS (once: by MessageSid and by call) within
    ``surveys.reply_window_hours`` of sending; anything else gets one clarifying reply per
    survey. Messages from opted-out numbers are ignored (no answer)."""
    number = normalise_number(from_number) or (from_number or "")[:32]
    survey = config.surveys

    def latest(states: tuple[str, ...]) -> SurveyInvitation | None:
        return session.scalar(
            select(SurveyInvitation).where(SurveyInvitation.channel == "sms",
                                           SurveyInvitation.caller_key == number,
                                           SurveyInvitation.state.in_(states))
            .order_by(SurveyInvitation.created_at.desc(), SurveyInvitation.id.desc()).limit(1))

    # Only a question that was sent (or may have been: unknown) can be answered; a ``queued``
    # one (not sent yet, e.g. the provider refused the first try) gives only the language.
    invitation = latest(("sent", "unknown", "answered"))
    newest = latest(("queued", "sent", "unknown", "answered"))
    language = newest.language if newest is not None else config.default_language

    def text(kind: str) -> str | None:
        texts = survey.sms_texts.get(kind, {})
        return texts.get(language) or texts.get(config.default_language)

    if is_stop(body):
        if not opt_out(session, number, now, message_sid=message_sid, body=body):
            return SmsReply("opted_out")
        return SmsReply("stop", text("stopped") if survey.stop_confirmation == "service" else None)
    if session.scalar(select(SurveyOptOut.id).where(SurveyOptOut.number == number)) is not None:
        log.info("survey SMS from opted-out %s ignored", number)
        return SmsReply("opted_out")
    if message_sid and session.scalar(select(SurveyResponse.id).where(
            SurveyResponse.message_sid == message_sid[:64])) is not None:
        return SmsReply("duplicate")
    if invitation is None or invitation.state == "answered":
        return SmsReply("ignored")
    sent_at = invitation.sent_at or invitation.created_at
    if now - sent_at > timedelta(hours=survey.reply_window_hours):
        log.info("survey reply from %s %s after the SMS: not counted", number, now - sent_at)
        return SmsReply("late")
    score = parse_sms_score(body)
    if score is None:
        if invitation.clarified_at is not None:
            return SmsReply("ignored")
        invitation.clarified_at = now
        return SmsReply("clarify", text("clarify"))
    if store_score(session, invitation, score, now, message_sid=message_sid[:64] or None) is None:
        return SmsReply("duplicate")
    return SmsReply("stored", text("thanks"))
