"""End to end: `flask simulate --surveys` on a slice of the excerpt, through the real webhooks."""
from __future__ import annotations

from sqlalchemy import func, select

from ivr.models import Call
from reporting.metrics import net_promoter_score, nps_class
from simulator.data import DEFAULT_DATA
from simulator.engine import Options
from survey.models import SmsOutbox, SurveyInvitation, SurveyResponse


def test_simulated_day_with_surveys_counts_each_answer_once(loaded_app, session):
    from simulator.cli import format_survey_figures, run_simulation

    with loaded_app.app_context():
        result, _, simulated = run_simulation(DEFAULT_DATA, None, limit=120,
                                              options=Options(seed=3, surveys=True))
    assert result.errors == [] and result.anomalies == []
    f = result.surveys
    answered_calls = session.scalar(select(func.count()).select_from(Call)
                                    .where(Call.answered_at.is_not(None)))
    assert answered_calls == simulated.answered
    # Every answered call was decided once per channel; nobody asked twice on one channel.
    decided = session.scalar(select(func.count(func.distinct(SurveyInvitation.call_id))))
    assert decided == answered_calls
    assert f.ivr_offered > 0 and f.sms_sent > 0 and f.answered_ivr > 0 and f.answered_sms > 0
    assert f.sms_sent == session.scalar(select(func.count()).select_from(SmsOutbox)
                                        .where(SmsOutbox.state == "sent"))
    scores = list(session.scalars(select(SurveyResponse.score)))
    assert len(scores) == f.answered_ivr + f.answered_sms
    assert len(set(session.scalars(select(SurveyResponse.call_id)))) == len(scores)
    classes = [nps_class(s) for s in scores]
    assert f.nps == net_promoter_score(classes.count("promoter"), classes.count("passive"),
                                       classes.count("detractor"))
    # The callers who answered by IVR stayed on the line; the SMS went to those who hung up.
    sms_calls = set(session.scalars(select(SurveyInvitation.call_id)
                                    .where(SurveyInvitation.channel == "sms",
                                           SurveyInvitation.state != "skipped")))
    hung_up = {c.sid for c in result.calls if c.hangs_up_first and c.answered}
    sids = dict(session.execute(select(Call.id, Call.call_sid)).all())
    assert {sids[i] for i in sms_calls} <= hung_up | {
        sids[i] for i in session.scalars(select(SurveyInvitation.call_id).where(
            SurveyInvitation.channel == "ivr", SurveyInvitation.state == "abandoned"))}
    text = "\n".join(format_survey_figures(result, Options(surveys=True)))
    assert "surveys offered" in text and "NPS" in text
