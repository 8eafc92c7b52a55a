"""The HTTP API and `kdsl predict` with a real decider (SmolLM2, zero-shot), real rules and real MDSIRC dialogues.

The decider folder is built here: a card for the SmolLM2 pack over four dialogue-intent labels, and a
collaboration (the example rules with statistics measured on the MDSIRC dialogues, and arbiters for each policy).
Requests go through FastAPI's TestClient, which runs the app's lifespan and model worker thread as uvicorn does.
Set KDSL_TEST_HOME to reuse the pulled pack between runs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kdsl.agents.arbiter import ArbiterConfig
from kdsl.agents.collaboration import ArbiterState, Collaboration
from kdsl.agents.decider import DeciderCard
from kdsl.agents.decider_prompt import PromptConfig
from kdsl.agents.evaluation import with_verify_stats
from kdsl.agents.predictor import Predictor
from kdsl.cli.main import app as cli
from kdsl.config import Settings
from kdsl.data import Dataset, Sample, save_jsonl
from kdsl.rules import RuleSet
from kdsl.serve import ServeLimits, create_app
from kdsl.tools.pipeline import default_builder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = "smollm2-135m-instruct"
TASK = "dialogue_intent"
LABELS = ("适用季节", "气泡", "何时上货", "商品材质")
RESTOCK = "212b14da17281748234545696d0add"  # "已经售罄了 / 何时补货": the restock rule fires
SEASON = "212b956c17282134923653071d0faf"  # "这适合在秋季穿着吗？": the season rule fires
BUBBLE_WITH_IMAGE = "2167760a17280538289528464d0acd"  # "出现了气泡，无法按下。" and a screenshot
LIMITS = ServeLimits(max_samples=4, max_images=2, max_image_bytes=200_000, max_image_pixels=1_000_000,
                     max_body_bytes=2 << 20, request_seconds=120)


@pytest.fixture(scope="module")
def settings(home_with_packs) -> Settings:
    return home_with_packs()  # SmolLM2, shared by the test run


@pytest.fixture(scope="module")
def dialogues(mdsirc) -> Dataset:
    return mdsirc.for_task(TASK)


def text_only(sample: Sample) -> Sample:
    """The dialogue without its pictures and candidates (the card's four labels are the label space)."""
    return sample.model_copy(update={"images": (), "candidates": (),
                                     "turns": tuple(t for t in sample.turns if t.image is None and t.text.strip())})


def as_request(sample: Sample, images: list[str] | None = None) -> dict:
    turns = [{"role": t.role, "text": t.text} if t.image is None else {"role": t.role, "image": t.image}
             for t in sample.turns]
    return {"id": sample.id, "task": sample.task, "turns": turns, "images": images or []}


@pytest.fixture(scope="module")
def rules(dialogues: Dataset, settings: Settings) -> RuleSet:
    """The example rules of the four labels, with statistics measured on the MDSIRC dialogues."""
    rules = RuleSet.load(REPO / "examples" / "rules" / "mdsirc_dialogue_intent.json")
    rules = RuleSet(rules=tuple(r for r in rules.rules if r.label in LABELS))
    features = default_builder(settings, images=False, progress=False).build(dialogues.samples)
    return with_verify_stats(rules, dialogues, features)


def write_card(folder: Path) -> Path:
    DeciderCard(name=folder.name, base_model=SMOLLM2, adapter=None, tasks=(TASK,), label_spaces={TASK: LABELS},
                prompt=PromptConfig(user_chars=80, agent_chars=0), label_suffix="<|im_end|>").save(folder)
    return folder


@pytest.fixture(scope="module")
def decider_dir(tmp_path_factory: pytest.TempPathFactory, rules: RuleSet) -> Path:
    """A decider folder as `kdsl eval` leaves it: the card and the collaboration (rules + arbiters)."""
    folder = write_card(tmp_path_factory.mktemp("deciders") / "smollm2-zero-shot")
    Collaboration(rules=rules, arbiters={
        "together:stacked": ArbiterState(config=ArbiterConfig(policy="stacked"), weights={TASK: 8.0}),
        "together:rules_first": ArbiterState(config=ArbiterConfig(policy="rules_first")),
        "together:decider_first": ArbiterState(config=ArbiterConfig(policy="decider_first")),
    }).save(folder)
    return folder


@pytest.fixture(scope="module")
def predictor(decider_dir: Path, settings: Settings):
    with Predictor.load(decider_dir, settings, policy="stacked") as p:
        yield p


@pytest.fixture(scope="module")
def client(predictor: Predictor):
    with TestClient(create_app(predictor, LIMITS)) as c:
        yield c


def error_of(response, status: int, code: str, item: int | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "item"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["item"] == item, body
    assert "Traceback" not in body["error"]["message"]
    return body["error"]["message"]


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The sum of the series of `name` that carry these labels (in any order), from /metrics."""
    found = []
    for line in client.get("/metrics").text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "").split(",") for k, v in labels.items()):
            found.append(float(m.group(2)))
    assert found, f"no {name} with {labels} in /metrics"
    return sum(found)


# --- predictions --------------------------------------------------------------------------------------------


def test_batch_is_labeled_from_the_label_space_and_explained(client: TestClient, dialogues: Dataset, rules: RuleSet):
    restock, season = text_only(dialogues.get(RESTOCK)), text_only(dialogues.get(SEASON))
    r = client.post("/v1/predict", json={"samples": [as_request(restock), as_request(season)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"] == "stacked" and body["decider"] == "smollm2-zero-shot"
    assert [d["item"] for d in body["decisions"]] == [0, 1]
    assert [d["id"] for d in body["decisions"]] == [RESTOCK, SEASON]
    for d, rule_label in zip(body["decisions"], ["何时上货", "适用季节"], strict=True):
        assert d["label"] in LABELS and d["task"] == TASK and 0 < d["confidence"] <= 1
        assert d["source"] in ("decider", "stacked")
        if d["source"] == "stacked":
            assert d["label"] == rule_label
        top = d["decider_top"]
        assert len(top) == 3 and {t["label"] for t in top} <= set(LABELS)
        assert top[0]["prob"] >= top[1]["prob"] >= top[2]["prob"] and sum(t["prob"] for t in top) <= 1 + 1e-6
        # The rule that must fire does, reported with the statistics the arbiter trusted it by.
        [fired] = [f for f in d["fired_rules"] if f["label"] == rule_label]
        stats = next(x for x in rules.rules if x.id == fired["id"]).stats
        assert fired["precision"] == pytest.approx(stats.precision)
        assert fired["precision_lower"] == pytest.approx(stats.precision_lower) and fired["support"] == stats.support
        assert fired["statement"] and fired["condition"]


def test_single_sample_form_and_rules_first_policy(predictor: Predictor, client: TestClient, dialogues: Dataset,
                                                   decider_dir: Path):
    """A bare sample object is a batch of one; under rules_first a trusted rule decides (same scores: cached)."""
    restock = text_only(dialogues.get(RESTOCK))
    r = client.post("/v1/predict", json=as_request(restock))
    assert r.status_code == 200, r.text
    assert len(r.json()["decisions"]) == 1
    rules_first = Predictor(predictor.decider, predictor.rules, Collaboration.load(decider_dir).arbiter("rules_first"),
                            predictor.builder)
    with TestClient(create_app(rules_first, LIMITS)) as other:
        [d] = other.post("/v1/predict", json={"samples": [as_request(restock)]}).json()["decisions"]
    assert (d["label"], d["source"], d["policy"]) == ("何时上货", "rule", "rules_first")
    assert d["confidence"] == pytest.approx(d["fired_rules"][0]["precision_lower"])


def test_real_image_is_read(client: TestClient, dialogues: Dataset, tmp_path: Path):
    sample = dialogues.get(BUBBLE_WITH_IMAGE)
    image = base64.b64encode(Path(sample.images[0]).read_bytes()).decode()
    body = as_request(sample.model_copy(update={"candidates": ()}), images=[image])
    assert any("image" in t for t in body["turns"])
    before = set(Path(LIMITS.tmp_dir or "/tmp").glob("kdsl-req-*"))
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    [d] = r.json()["decisions"]
    assert d["label"] in LABELS
    assert any(f["label"] == "气泡" for f in d["fired_rules"])
    assert set(Path(LIMITS.tmp_dir or "/tmp").glob("kdsl-req-*")) <= before  # the request's files are gone


# --- what the API refuses -----------------------------------------------------------------------------------


def _png(width: int, height: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_bad_requests_are_json_errors_with_codes(client: TestClient, dialogues: Dataset):
    ok = as_request(text_only(dialogues.get(SEASON)))
    rng = random.Random(0)
    jpeg = Path(dialogues.get(BUBBLE_WITH_IMAGE).images[0]).read_bytes()

    def with_(**fields) -> dict:
        return {**ok, **fields}

    def one_image(data: str) -> dict:
        return with_(turns=[{"role": "user", "text": "看图"}, {"role": "user", "image": 0}], images=[data])

    post = client.post
    # wrong types: a number as text, a string as turns, a list as body
    msg = error_of(post("/v1/predict", json={"samples": [ok, with_(turns=[{"role": "user", "text": 5}])]}), 422,
                   "invalid_request", item=1)
    assert "turns[0].text" in msg
    error_of(post("/v1/predict", json=with_(turns="hello")), 422, "invalid_request", item=0)
    error_of(post("/v1/predict", json=[ok]), 422, "invalid_request")
    error_of(post("/v1/predict", json=with_(turns=[{"role": "customer", "text": "hi"}])), 422, "invalid_request", 0)
    error_of(post("/v1/predict", json=with_(extra_field=1)), 422, "invalid_request", item=0)
    error_of(post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"}), 400,
             "invalid_json")
    error_of(post("/v1/predict", content=json.dumps(ok), headers={"content-type": "text/plain"}), 415,
             "unsupported_media_type")
    # content errors
    assert "dialogue_intent" in error_of(post("/v1/predict", json={"samples": [ok, with_(task="weather")]}), 422,
                                         "unknown_task", item=1)
    error_of(post("/v1/predict", json=with_(turns=[])), 422, "empty_turns", item=0)
    error_of(post("/v1/predict", json={"samples": []}), 422, "empty_batch")
    error_of(post("/v1/predict", json=with_(turns=[{"role": "user", "text": "  "}])), 422, "empty_dialogue", 0)
    error_of(post("/v1/predict", json=with_(candidates=["天气"])), 422, "unknown_label", item=0)
    error_of(post("/v1/predict", json=with_(turns=[{"role": "user", "image": 1}], images=[_png(8, 8)])), 422,
             "invalid_request", item=0)
    # limits
    error_of(post("/v1/predict", json={"samples": [ok] * 5}), 413, "too_many_samples")
    error_of(post("/v1/predict", json={"samples": [ok, with_(images=[_png(8, 8)] * 3)]}), 413, "too_many_images", 1)
    error_of(post("/v1/predict", json=one_image(base64.b64encode(rng.randbytes(300_000)).decode())), 413,
             "image_too_large", item=0)
    assert "1200x1000" in error_of(post("/v1/predict", json=one_image(_png(1200, 1000))), 413, "image_too_large", 0)
    error_of(post("/v1/predict", content=b" " * (3 << 20), headers={"content-type": "application/json"}), 413,
             "body_too_large")
    # corrupt images: random bytes, a JPEG cut in half, not base64 at all
    error_of(post("/v1/predict", json=one_image(base64.b64encode(rng.randbytes(4096)).decode())), 422,
             "invalid_image", item=0)
    error_of(post("/v1/predict", json=one_image(base64.b64encode(jpeg[: len(jpeg) // 2]).decode())), 422,
             "invalid_image", item=0)
    error_of(post("/v1/predict", json=one_image("this is not base64!")), 422, "invalid_image", item=0)
    # routes
    error_of(client.get("/v1/nothing"), 404, "not_found")
    error_of(client.get("/v1/predict"), 405, "method_not_allowed")
    error_of(client.get("/v1/rules", params={"min_precision": 2}), 422, "invalid_request")

    assert metric(client, "kdsl_http_requests_total", path="/v1/predict", status="413") >= 5
    assert metric(client, "kdsl_http_requests_total", path="/v1/predict", status="422") >= 14
    assert metric(client, "kdsl_errors_total", code="invalid_image") >= 3


def test_timeout_is_504(predictor: Predictor, dialogues: Dataset):
    sample = text_only(dialogues.get("2150b4c117279258245817890d0a27"))  # not scored yet
    with TestClient(create_app(predictor, LIMITS.model_copy(update={"request_seconds": 0.05}))) as fast:
        error_of(fast.post("/v1/predict", json=as_request(sample)), 504, "timeout")


# --- rules, health, docs, metrics ---------------------------------------------------------------------------


def test_rules_search_and_filters(client: TestClient, rules: RuleSet):
    every = client.get("/v1/rules").json()
    assert every["total"] == len(rules) == 3
    lowers = [r["precision_lower"] for r in every["rules"]]
    assert lowers == sorted(lowers, reverse=True)
    [bubble] = client.get("/v1/rules", params={"q": "泡泡"}).json()["rules"]  # a term of its condition
    assert bubble["label"] == "气泡" and bubble["support"] > 0
    assert client.get("/v1/rules", params={"q": "RESTOCKED"}).json()["rules"][0]["label"] == "何时上货"  # statement
    assert client.get("/v1/rules", params={"label": "适用季节", "task": TASK}).json()["total"] == 1
    assert client.get("/v1/rules", params={"task": "image_scene"}).json()["total"] == 0
    strict = client.get("/v1/rules", params={"min_precision": 1.0}).json()
    assert strict["total"] == sum(r.stats.precision >= 1.0 for r in rules.rules)
    assert client.get("/v1/rules", params={"limit": 1, "offset": 1}).json()["rules"][0]["id"] == every["rules"][1]["id"]


def test_health_docs_and_metrics(client: TestClient):
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["predictor"]["policy"] == "stacked" and health["predictor"]["verify_stats"] is True
    assert health["label_spaces"] == {TASK: list(LABELS)}
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE kdsl_http_request_seconds histogram" in r.text
    assert metric(client, "kdsl_http_requests_total", path="/v1/predict", status="200") >= 3
    assert metric(client, "kdsl_http_request_seconds_count", path="/v1/predict") >= 3
    assert metric(client, "kdsl_predictions_total", task=TASK) >= 4
    assert metric(client, "kdsl_model_batch_samples_count") >= 2


# --- batch prediction from a file ---------------------------------------------------------------------------


def test_kdsl_predict_writes_one_decision_per_sample(tmp_path: Path, dialogues: Dataset, rules: RuleSet,
                                                     settings: Settings, monkeypatch, caplog):
    """Without collaboration.json: the given rules, no verify statistics, decider_first, and a log line saying so."""
    folder = write_card(tmp_path / "bare-decider")
    rules_file = RuleSet(rules=tuple(r.model_copy(update={"stats": None}) for r in rules.rules)).save(
        tmp_path / "rules.json")
    picked = [text_only(dialogues.get(i)) for i in (SEASON, "2150b4c117279258245817890d0a27", RESTOCK)]
    data = save_jsonl(Dataset(name="few", samples=tuple(picked), label_spaces={TASK: LABELS}),
                      tmp_path / "few.jsonl")
    out = tmp_path / "out" / "decisions.jsonl"
    monkeypatch.setenv("KDSL_HOME", str(settings.home))
    with caplog.at_level(logging.WARNING, logger="kdsl.agents.predictor"):
        result = CliRunner().invoke(cli, ["predict", "--decider", str(folder), "--in", str(data), "--out", str(out),
                                          "--rules", str(rules_file)])
    assert result.exit_code == 0, result.output
    assert any("no collaboration.json" in r.getMessage() and "decider_first" in r.getMessage()
               for r in caplog.records)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [s.id for s in picked] and [r["item"] for r in rows] == [0, 1, 2]
    assert all(r["label"] in LABELS and r["policy"] == "decider_first" for r in rows)
    assert [r["gold"] for r in rows] == [s.label for s in picked]
    [season_rule] = rows[0]["fired_rules"]
    assert season_rule["label"] == "适用季节" and season_rule["precision"] is None  # no verify statistics
    assert "3 decisions" in result.output

    # an item of a task the decider does not serve is named, with the file
    other_task = picked[1].model_copy(update={"task": "image_scene", "label": None})
    bad = save_jsonl(Dataset(name="bad", samples=(picked[0], other_task),
                             label_spaces={TASK: LABELS, "image_scene": ("x",)}), tmp_path / "bad.jsonl")
    result = CliRunner().invoke(cli, ["predict", "--decider", str(folder), "--in", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert "bad.jsonl" in result.output and "item 1" in result.output and "unknown task" in result.output


# --- last: the model goes away -------------------------------------------------------------------------------


def test_model_failure_is_503_and_the_server_lives_on(client: TestClient, predictor: Predictor, dialogues: Dataset):
    predictor.decider.backend.close()  # the real model is unloaded: scoring a new dialogue now fails inside it
    sample = text_only(dialogues.get("213ca40d17272374184656512d1034"))
    message = error_of(client.post("/v1/predict", json=as_request(sample)), 503, "model_error")
    assert "model failed" in message
    assert client.get("/healthz").status_code == 200
    assert metric(client, "kdsl_errors_total", code="model_error") == 1
