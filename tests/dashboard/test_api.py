"""The JSON API and the pages over HTTP against a real server, on a local folder and on S3
(moto): every endpoint, the token, CSRF and origin refusals, and every action through the store."""

from __future__ import annotations

import base64
import html
from datetime import datetime, timedelta, timezone

from .conftest import SCRIPT_ARG, TOKEN, Served

PAGES = ["/", "/tasks", "/schedules", "/dead-letter"]
READS = ["/api/queues", "/api/tasks", "/api/schedules", "/api/dead-letter", "/api/csrf"]


def test_every_page_loads(served: Served) -> None:
    texts = {}
    for path in PAGES + [f"/tasks/{tid}" for tid in served.ids.values()] + ["/static/app.js"]:
        r = served.http.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        texts[path] = r.text
        if not path.startswith("/static/"):
            assert r.headers["content-type"].startswith("text/html")
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert 'data-queue="idle"' in texts["/"]
    assert 'data-schedule="hourly"' in texts["/schedules"]
    assert served.ids["dead"] in texts["/dead-letter"]
    assert "boom went the task" in texts[f"/tasks/{served.ids['dead']}"]


def test_task_args_are_escaped_on_the_page(served: Served) -> None:
    c = served.http
    page = c.get(f"/tasks/{served.ids['script']}").text
    api = c.get(f"/api/tasks/{served.ids['script']}")
    assert SCRIPT_ARG not in page and "<script>window" not in page
    assert html.escape(SCRIPT_ARG, quote=False) in page
    assert api.headers["content-type"] == "application/json"
    assert api.json()["task"]["args"] == [SCRIPT_ARG, "!"]  # the data itself, unchanged
    assert api.json()["result"]["result"] == SCRIPT_ARG + "!"


def test_queues_api(served: Served) -> None:
    c = served.http
    body = c.get("/api/queues").json()
    queues = {q["queue"]: q for q in body["queues"]}
    assert (queues["default"]["completed"], queues["default"]["failed"]) == (2, 1)
    assert queues["idle"]["pending"] == 1 and queues["idle"]["oldest_runnable_age_s"] >= 0
    buckets = body["throughput"]["buckets"]
    assert len(buckets) == 12 and body["throughput"]["bucket_minutes"] == 5
    assert sum(b["completed"] for b in buckets) >= 2 and sum(b["failed"] for b in buckets) >= 1


def test_tasks_api_filters_and_pages(served: Served) -> None:
    c = served.http

    def ids(**params: str) -> list[str]:
        r = c.get("/api/tasks", params={"queue": "default", **params})
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["tasks"]]

    everything = ids()
    assert sorted(everything) == sorted([served.ids[k] for k in ("done", "script", "dead")])
    assert ids(state="failed") == [served.ids["dead"]]
    assert ids(func="boo") == [served.ids["dead"]]
    assert ids(limit="1") + ids(offset="1", limit="1") + ids(offset="2") == everything
    assert ids(offset="3") == []
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    assert ids(since=future) == [] and sorted(ids(until=future)) == sorted(everything)
    assert c.get("/api/tasks", params={"queue": "idle"}).json()["total"] == 1
    bad = c.get("/api/tasks", params={"state": "bogus"})
    assert bad.status_code == 400 and "state must be one of" in bad.json()["error"]
    assert c.get("/api/tasks", params={"limit": "x"}).status_code == 400
    assert c.get("/api/tasks", params={"since": "yesterday"}).status_code == 400


def test_task_api(served: Served) -> None:
    c = served.http
    dead = c.get(f"/api/tasks/{served.ids['dead']}").json()
    done = c.get(f"/api/tasks/{served.ids['done']}").json()
    assert c.get("/api/tasks/01NOSUCHTASK").status_code == 404
    assert c.get("/api/tasks/not an id!").status_code == 404
    assert dead["task"]["status"] == "failed" and dead["task"]["attempts"] == 1
    assert "boom went the task" in dead["result"]["traceback"]
    assert [e["type"] for e in dead["events"]][:1] == ["enqueued"]
    assert "failed" in [e["type"] for e in dead["events"]]
    assert done["result"] == {**done["result"], "status": "success", "result": 3}


def test_schedules_and_dead_letter_api(served: Served) -> None:
    c = served.http
    schedules = {s["id"]: s for s in c.get("/api/schedules").json()["schedules"]}
    dead = c.get("/api/dead-letter", params={"queue": "default"}).json()
    hourly = schedules["hourly"]
    assert hourly["status"] == "active" and hourly["recipe"] == "every 3600 s"
    assert hourly["next_run_utc"] and hourly["next_run_local"]
    assert [t["id"] for t in dead["tasks"]] == [served.ids["dead"]]


def test_openapi_describes_every_api_route(served: Served) -> None:
    c = served.http
    doc = c.get("/api/openapi.json").json()
    routes = {
        (m.lower(), r.path)
        for r in served.web.routes
        if r.path.startswith("/api/") and r.path != "/api/openapi.json"
        for m in r.methods - {"HEAD"}
    }
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert described == routes


def test_a_token_is_required(served: Served) -> None:
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    with served.client(token=None) as c:
        for path in [*PAGES, *READS, "/static/app.js"]:
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
            assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get(path, headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert c.post("/api/purge-expired").status_code == 401


def test_actions_need_the_csrf_token_and_this_origin(served: Served) -> None:
    pending = served.app.enqueue("add", 1, 1, queue="guarded").id
    cancel = f"/api/tasks/{pending}/cancel"
    c = served.http
    token = c.get("/api/csrf").json()["csrf"]
    assert c.post(cancel).status_code == 403
    assert c.post(cancel, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    assert c.post(cancel, data={"csrf": "nope", "next": "/"}).status_code == 403
    foreign = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
    assert c.post(cancel, headers=foreign).status_code == 403
    assert c.get(cancel).status_code == 405  # no action is reachable by GET
    assert served.task(pending).status.value == "pending"
    ok = c.post(cancel, headers={"X-CSRF-Token": token, "Origin": served.url})
    assert ok.status_code == 200 and ok.json()["ok"]


def post(served: Served, path: str, **form: str) -> tuple[int, str]:
    c = served.http
    r = c.post(path, headers={"X-CSRF-Token": served.csrf}, data=form)
    return r.status_code, r.json()["message"]


def test_cancel_delete_and_retry(served: Served) -> None:
    app, queue = served.app, served
    pending = app.enqueue("add", 2, 2, queue="acts").id
    assert post(served, f"/api/tasks/{pending}/cancel")[0] == 200
    assert queue.task(pending).status.value == "cancelled"
    code, message = post(served, f"/api/tasks/{pending}/cancel")
    assert code == 409 and "is cancelled, not pending" in message
    kept = app.enqueue("add", 2, 3, queue="acts").id
    code, message = post(served, f"/api/tasks/{kept}/delete")
    assert code == 409 and f"task {kept} is pending, not finished" in message
    assert post(served, f"/api/tasks/{pending}/delete") == (200, f"task {pending} deleted")
    assert queue.task(pending) is None

    failing = [app.enqueue("boom", queue="acts").id for _ in range(2)]
    app.run_worker(queues=["acts"], burst=True, scheduler=False)
    assert post(served, f"/api/tasks/{failing[0]}/retry")[0] == 200
    retried = queue.task(failing[0])
    assert (retried.status.value, retried.attempts) == ("pending", 0)

    code, message = post(served, "/api/dead-letter/retry-all", queue="acts")
    assert (code, message) == (200, "1 failed task(s) of queue acts back to pending")
    assert {queue.task(t).status.value for t in failing} == {"pending"}
    # the action emptied the cache: the next read shows it
    assert served.http.get("/api/dead-letter", params={"queue": "acts"}).json()["total"] == 0


def test_schedule_actions(served: Served) -> None:
    served.app.schedule("add", interval=60, args=[1, 1], id="acts-schedule")
    base = "/api/schedules/acts-schedule"
    assert post(served, f"{base}/pause") == (200, "schedule acts-schedule paused")
    assert served.app.get_schedule("acts-schedule").status.value == "paused"
    assert post(served, f"{base}/pause")[0] == 409
    assert post(served, f"{base}/resume") == (200, "schedule acts-schedule resumed")
    assert post(served, f"{base}/delete") == (200, "schedule acts-schedule deleted")
    assert served.app.get_schedule("acts-schedule") is None
    assert post(served, f"{base}/resume")[0] == 409


def test_purge_expired(served: Served) -> None:
    short = served.app.enqueue("add", 0, 0, queue="short", ttl=0).id
    served.app.run_worker(queues=["short"], burst=True, scheduler=False)
    code, message = post(served, "/api/purge-expired")
    assert code == 200 and message.startswith("removed ") and "tasks" in message
    assert served.task(short) is None


def test_a_form_action_goes_back_to_its_page(served: Served) -> None:
    pending = served.app.enqueue("add", 3, 3, queue="forms").id
    with served.client(follow_redirects=False) as c:
        form = {"csrf": served.csrf, "next": "/tasks?queue=forms&flash=old"}
        r = c.post(f"/api/tasks/{pending}/cancel", data=form)
        assert r.status_code == 303
        assert r.headers["location"] == f"/tasks?queue=forms&flash=task+{pending}+cancelled"
        assert "old" not in r.headers["location"]
        offsite = c.post("/api/purge-expired", data={**form, "next": "//evil.example/"})
        assert offsite.status_code == 200 and offsite.json()["ok"]  # JSON, not a redirect
