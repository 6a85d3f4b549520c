"""Line configuration loading and validation, the menus it produces, tokens and the agent API."""
from __future__ import annotations

import copy

import pytest
import yaml
from sqlalchemy import select

from admin.models import ApiToken
from line_config import LineConfigError, parse_line_config
from routing.models import Agent, Queue
from tests.conftest import PUBLIC_BASE, SAMPLE_CONFIG, Caller, load_yaml
from tests.twiml import assert_gathers_have_fallback, assert_no_estonian_say, parse

SAMPLE = load_yaml(SAMPLE_CONFIG)


def _broken(mutate) -> dict:
    document = copy.deepcopy(SAMPLE)
    mutate(document)
    return document


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["agents"][2].update(endpoint="12ab"), "agents.2.endpoint"),
    (lambda d: d["agents"][0].update(skills=["et.astrology"]), "agents.0.skills"),
    (lambda d: d["languages"][0].update(voice={"language": "et-EE", "name": "Google.et-EE-Standard-A"}),
     "languages.0.voice"),
    (lambda d: d["topic_menu"].update({"7": {"topic": "pension", "transfer": "rehabilitation"}}),
     "topic_menu.7"),
    (lambda d: d["topic_menu"].update({"12": {"topic": "pension"}}), "topic_menu"),
    (lambda d: d["prompts"]["welcome"].pop("ru"), "prompts.welcome.ru"),
    (lambda d: d["units"][0].update(phone_number="not a number"), "units.0.phone_number"),
    (lambda d: d.update(colour="blue"), "colour"),
    (lambda d: d["units"][0].update(phone_number="5550 010x"), "units.0.phone_number"),
    (lambda d: d["units"][0].update(phone_number=""), "units.0.phone_number"),
    (lambda d: d["agents"].append(dict(d["agents"][0])), "agents: 'Mari' appear"),
    (lambda d: d["units"].append(dict(d["units"][0])), "units: 'rehabilitation' appear"),
    (lambda d: d["agents"][0].update(endpoint="sip:@"), "agents.0.endpoint"),
    (lambda d: d.update(timezone="Europe/Tallin"), "timezone"),
    (lambda d: d["hours"].update(holidays_country="XX"), "hours.holidays_country"),
    (lambda d: d["hours"].update(open=540), "hours.open"),
    (lambda d: d["hours"].update(open="18:00"), "open must be earlier than close"),
    (lambda d: d["hours"].update(weekdays=[0, 9]), "hours.weekdays"),
    (lambda d: d["hours"].update(weekdays=[]), "hours.weekdays"),
    (lambda d: d.update(person_key="55"), "person_key"),
    (lambda d: d.update(repeat_key="0"), "person_key and repeat_key must differ"),
    (lambda d: d["prompts"]["queue_position"]["en"].update(text="You are {posiiton}."),
     "prompts.queue_position.en: unknown placeholder(s) posiiton"),
    (lambda d: d["prompts"]["transfer"]["en"].update(text="Connecting { now"), "prompts.transfer.en"),
    (lambda d: d["prompts"]["transfer"]["en"].update(text=""), "prompts.transfer.en.text"),
])
def test_invalid_configuration_names_the_bad_field(mutate, field):
    with pytest.raises(LineConfigError) as info:
        parse_line_config(_broken(mutate))
    assert field in str(info.value)


def test_config_load_command_reports_bad_field_and_loads_nothing(app, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_broken(lambda d: d["agents"][1].update(endpoint="+1"))),
                   encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["config", "load", str(bad)])
    assert result.exit_code != 0
    assert "agents.1.endpoint" in result.output
    with app.extensions["db_sessionmaker"]() as s:
        assert s.scalars(select(Agent)).all() == []


def test_config_load_refuses_duplicate_yaml_keys_and_non_utf8(app, tmp_path):
    runner = app.test_cli_runner()
    dup = tmp_path / "dup.yaml"
    dup.write_text(SAMPLE_CONFIG.read_text(encoding="utf-8") + "\nagents: []\n", encoding="utf-8")
    result = runner.invoke(args=["config", "load", str(dup)])
    assert result.exit_code != 0 and "key 'agents' appears twice" in result.output
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: Sotsiaalkindlustusameti infotelefon õ\n".encode("latin-1"))
    result = runner.invoke(args=["config", "load", str(latin)])
    assert result.exit_code != 0 and "not UTF-8" in result.output
    with app.extensions["db_sessionmaker"]() as s:
        assert s.scalars(select(Agent)).all() == []


def test_agents_removed_from_the_file_can_no_longer_take_calls(app, tmp_path):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["config", "load", str(SAMPLE_CONFIG)]).exit_code == 0
    document = copy.deepcopy(SAMPLE)
    document["agents"] = [a for a in document["agents"] if a["name"] != "Jaan"]
    path = tmp_path / "without-jaan.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(args=["config", "load", str(path)])
    assert result.exit_code == 0 and "1 agent(s) not in the file lost their skills" in result.output
    with app.extensions["db_sessionmaker"]() as s:
        jaan = s.scalar(select(Agent).where(Agent.name == "Jaan"))
        assert (jaan.skills, jaan.state) == ([], "offline")


def test_sample_configuration_loads_queues_agents_and_is_idempotent(app):
    runner = app.test_cli_runner()
    for _ in range(2):
        result = runner.invoke(args=["config", "load", str(SAMPLE_CONFIG)])
        assert result.exit_code == 0, result.output
        assert "18 queues, 5 agents, 2 units" in result.output
    with app.extensions["db_sessionmaker"]() as s:
        assert len(s.scalars(select(Queue)).all()) == 18
        kadri = s.scalar(select(Agent).where(Agent.name == "Kadri"))
        assert (kadri.endpoint_kind, kadri.endpoint) == ("sip", "sip:kadri@pbx.example.ee")
        peeter = s.scalar(select(Agent).where(Agent.name == "Peeter"))
        assert (peeter.endpoint_kind, peeter.endpoint) == ("client", "peeter")
        assert sorted(sk.skill for sk in kadri.skills)[:2] == ["en.family", "en.general"]


def _all_menu_documents(caller: Caller, config: dict):
    """Every document with a menu the sample configuration can produce."""
    yield parse(caller.post("/twilio/voice"))
    for attempt in (1, 2):
        for digits in (None, "9", "*"):
            yield parse(caller.post(f"/twilio/ivr/language?attempt={attempt}", Digits=digits))
    for key, _lang in enumerate(config["languages"], start=1):
        yield parse(caller.post("/twilio/ivr/language?attempt=1", Digits=str(key)))
        for attempt in (1, 2):
            for digits in (None, "9", "*", "#"):
                yield parse(caller.post(f"/twilio/ivr/topic?attempt={attempt}", Digits=digits))


def test_every_gather_of_the_sample_menus_has_a_fallback(caller):
    count = 0
    for root in _all_menu_documents(caller, SAMPLE):
        assert root.find("Gather") is not None
        assert_gathers_have_fallback(root)
        assert_no_estonian_say(root)
        count += 1
    assert count == 1 + 6 + 3 * (1 + 8)


def test_twiml_is_utf8_and_keeps_estonian_letters(app, tmp_path):
    document = copy.deepcopy(SAMPLE)
    document["prompts"]["welcome"]["en"] = {"text": "Tere tulemast: õ ä ö ü š ž Õ Ä Ö Ü Š Ž."}
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert app.test_cli_runner().invoke(args=["config", "load", str(path)]).exit_code == 0
    caller = Caller(app.test_client())
    caller.post("/twilio/voice")
    response = caller.post("/twilio/ivr/language?attempt=1", Digits="3")
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert response.data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert "õ ä ö ü š ž Õ Ä Ö Ü Š Ž".encode("utf-8") in response.data
    assert parse(response)[0].text == "Tere tulemast: õ ä ö ü š ž Õ Ä Ö Ü Š Ž."


def test_estonian_prompt_audio_is_rendered_and_served(loaded_app):
    import shutil
    if shutil.which(loaded_app.config["TTS_COMMAND"]) is None:
        pytest.fail("espeak-ng is not installed: run 'make setup'")
    client = loaded_app.test_client()
    response = client.get("/audio/et/queue_position.wav?position=3")
    assert response.status_code == 200
    assert response.mimetype == "audio/wav"
    assert response.data[:4] == b"RIFF" and response.data[8:12] == b"WAVE"
    assert client.get("/audio/et/nonexistent.wav").status_code == 404
    for bad in ("position=x", "position=%C2%B2", "position=%D9%A3", "position=1000",
                "position=3&other=1", "", "position=-1"):
        assert client.get(f"/audio/et/queue_position.wav?{bad}").status_code == 400, bad
    assert client.get("/audio/et/welcome.wav?x=1").status_code == 400
    assert client.get("/audio/et/welcome.wav").status_code == 200
    assert client.get("/audio/xx/welcome.wav").status_code == 404
    assert client.get("/audio/et/..%2F..%2Fapp.py.wav").status_code == 404


def _token(app, role: str, agent: str | None = None) -> str:
    args = ["tokens", "create", "--role", role] + (["--agent", agent] if agent else [])
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_tokens_are_stored_only_as_hashes(loaded_app):
    token = _token(loaded_app, "supervisor")
    assert len(token) >= 40
    with loaded_app.extensions["db_sessionmaker"]() as s:
        row = s.scalar(select(ApiToken))
    assert row.role == "supervisor"
    assert token not in row.token_hash and len(row.token_hash) == 64


def test_agent_token_needs_an_agent_and_only_agent_tokens_have_one(loaded_app):
    result = loaded_app.test_cli_runner().invoke(args=["tokens", "create", "--role", "agent"])
    assert result.exit_code != 0
    assert "--agent" in result.output
    result = loaded_app.test_cli_runner().invoke(
        args=["tokens", "create", "--role", "admin", "--agent", "Mari"])
    assert result.exit_code != 0 and "only agent tokens" in result.output


def test_agent_state_api_roles(loaded_app):
    client = loaded_app.test_client()
    mari = _token(loaded_app, "agent", "Mari")
    supervisor = _token(loaded_app, "supervisor")
    reporting = _token(loaded_app, "reporting")
    body = {"state": "available"}
    assert client.put("/api/agents/Mari/state", json=body).status_code == 401
    assert client.put("/api/agents/Mari/state", json=body,
                      headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.put("/api/agents/Mari/state", json=body,
                      headers={"Authorization": f"Bearer {reporting}"}).status_code == 403
    assert client.put("/api/agents/Jaan/state", json=body,
                      headers={"Authorization": f"Bearer {mari}"}).status_code == 403
    ok = client.put("/api/agents/Mari/state", json=body, headers={"Authorization": f"Bearer {mari}"})
    assert ok.status_code == 200 and ok.get_json()["agent"]["state"] == "available"
    assert client.put("/api/agents/Jaan/state", json={"state": "wrap_up"},
                      headers={"Authorization": f"Bearer {supervisor}"}).status_code == 200
    bad = client.put("/api/agents/Jaan/state", json={"state": "busy"},
                     headers={"Authorization": f"Bearer {supervisor}"})
    assert bad.status_code == 409 and "routing" in bad.get_json()["error"]
    assert client.put("/api/agents/Jaan/state", data="state=available",
                      headers={"Authorization": f"Bearer {supervisor}"}).status_code == 400
    for unknown in ("Nobody", "99999999999999999999", "%C2%B2"):
        assert client.put(f"/api/agents/{unknown}/state", json=body,
                          headers={"Authorization": f"Bearer {supervisor}"}).status_code == 404
    deep = "[" * 30000 + "]" * 30000
    assert client.put("/api/agents/Jaan/state", data=deep, content_type="application/json",
                      headers={"Authorization": f"Bearer {supervisor}"}).status_code == 400
    listed = client.get("/api/agents", headers={"Authorization": f"Bearer {supervisor}"}).get_json()
    assert {a["name"]: a["state"] for a in listed["agents"]}["Mari"] == "available"


def test_agent_becoming_available_is_offered_the_waiting_caller(loaded_app):
    client = loaded_app.test_client()
    caller = Caller(client)
    caller.post("/twilio/voice")
    caller.post("/twilio/ivr/language?attempt=1", Digits="1")
    caller.post("/twilio/ivr/topic?attempt=1", Digits="1")
    token = _token(loaded_app, "agent", "Jaan")
    response = client.put("/api/agents/Jaan/state", json={"state": "available"},
                          headers={"Authorization": f"Bearer {token}"})
    assert response.get_json()["agent"]["state"] == "offered"
    assert loaded_app.extensions["telephony"].sent == [
        ("redirect", caller.call_sid, PUBLIC_BASE + "/twilio/queue/connect")]
    # While ringing or talking the agent cannot log out.
    refused = client.put("/api/agents/Jaan/state", json={"state": "offline"},
                         headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 409


def test_missing_auth_token_fails_fast(db_url, monkeypatch):
    from app import create_app
    from config import ConfigError

    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        create_app({"DATABASE_URL": db_url})


def test_api_errors_are_json(loaded_app):
    client = loaded_app.test_client()
    token = _token(loaded_app, "admin")
    missing = client.get("/api/nothing-here", headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 404 and "error" in missing.get_json()
    wrong_method = client.delete("/api/agents", headers={"Authorization": f"Bearer {token}"})
    assert wrong_method.status_code == 405 and "error" in wrong_method.get_json()
    # Provider routes keep plain answers.
    assert client.get("/twilio/voice").status_code == 405


def test_referral_directory_is_searchable_by_agents(loaded_app):
    client = loaded_app.test_client()
    auth = {"Authorization": f"Bearer {_token(loaded_app, 'agent', 'Mari')}"}
    everything = client.get("/api/referrals", headers=auth).get_json()["referrals"]
    assert [r["code"] for r in everything] == ["tootukassa", "tervisekassa", "emta"]
    found = client.get("/api/referrals?q=SICKNESS", headers=auth).get_json()["referrals"]
    assert [(r["name"], r["phone"]) for r in found] == [("Tervisekassa (Health Insurance Fund)", "669 6630")]
    assert client.get("/api/referrals").status_code == 401


def test_referral_option_needs_a_known_referral_with_prompts():
    with pytest.raises(LineConfigError, match="unknown referral 'nobody'"):
        parse_line_config(_broken(lambda d: d["topic_menu"].update({"8": {"refer": "nobody"}})))
    with pytest.raises(LineConfigError, match="prompts.referral_emta.ru: missing"):
        parse_line_config(_broken(lambda d: d["prompts"]["referral_emta"].pop("ru")))
