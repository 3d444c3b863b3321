"""A local fake of Amazon Bedrock's batch control plane and runtime, reached by boto3 over real HTTP.

moto implements neither batch inference jobs nor Converse, so this small server answers the REST
paths that botocore's ``bedrock`` and ``bedrock-runtime`` clients call (paths and shapes taken from
the botocore service models)::

    POST /model-invocation-job                      CreateModelInvocationJob
    GET  /model-invocation-job/{jobIdentifier}      GetModelInvocationJob
    GET  /model-invocation-jobs                     ListModelInvocationJobs
    POST /model-invocation-job/{jobIdentifier}/stop StopModelInvocationJob
    POST /model/{modelId}/converse                  Converse
    POST /model/{modelId}/invoke                    InvokeModel

Batch input is read from, and output written to, moto's S3. A job moves one state further on each
GetModelInvocationJob call (never on wall-clock time), so tests are fast and deterministic. Use::

    with BedrockFake(s3_endpoint=moto_url) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", fake.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.url)
        fake.configure(throttle_first=3)
        ...
        assert fake.submissions == 1

or the ``bedrock_fake`` fixture below (registered for every test module in conftest.py), which does the routing.

Validation follows the service: CreateModelInvocationJob checks jobName (<= 63, Bedrock's pattern),
roleArn, clientRequestToken and timeoutDurationInHours (24-168) with a 400 ValidationException; a
job with fewer than ``min_records`` (default 100) or more than 50,000 records ends Failed; a record
whose Messages body is malformed comes back with a per-record error. Converse/InvokeModel answer a
malformed body with 400 ValidationException and ``throttle_first`` calls with 429
ThrottlingException. ``hold_after=K, hold_count=C`` holds every runtime call after the first K admitted
(never answering it) and sets ``fake.holding`` once C calls are held: a test can then kill the client
at a point reached deterministically. ``fake.answered`` counts answered runtime bodies, to prove
that nothing was paid twice.

Answers are deterministic: ``answer(system, messages) -> str`` (default: the first 12 characters of
the last user turn after its first full-width colon). Token usage: one input token per character of
system and message text, one output token per answer character; an answer longer than
``max_tokens`` is cut there with stop reason ``max_tokens``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from bedrock_rules import (
    MAX_RECORDS,
    converse_problem,
    job_request_problem,
    message_text,
    messages_problem,
    system_text,
)

ACCOUNT = "123456789012"
REGION = "us-east-1"
FINAL = ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")
PROGRESS = ("Submitted", "Validating", "Scheduled", "InProgress")

AnswerFn = Callable[[str, list], str]
RecordErrorFn = Callable[[str, dict], "tuple[int, str] | None"]
RuntimeErrorFn = Callable[[str, list], "tuple[int, str, str] | None"]


def default_answer(system: str, messages: list) -> str:
    last = message_text(messages[-1]["content"]) if messages else ""
    first_line = last.split("\n", 1)[0]
    return first_line.split("：", 1)[-1][:12]


@dataclass
class FakeJob:
    arn: str
    job_id: str
    name: str
    token: str
    model_id: str
    role_arn: str
    input_uri: str
    output_uri: str
    submit_time: dt.datetime
    states: list[str]
    records: list[dict] = field(default_factory=list)
    step: int = 0
    message: str = ""
    outputs_written: bool = False
    success: int = 0
    errors: int = 0
    timeout_hours: int = 24  # CreateModelInvocationJob's timeoutDurationInHours (Bedrock's default: 24)

    @property
    def status(self) -> str:
        return self.states[min(self.step, len(self.states) - 1)]


class BedrockFake:
    """The fake server plus the knobs tests turn and the counters they read."""

    def __init__(self, s3_endpoint: str, region: str = REGION) -> None:
        import boto3

        self.s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=region,
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        self.region = region
        self.lock = threading.Lock()
        self.jobs: dict[str, FakeJob] = {}  # by job id
        self.by_token: dict[str, str] = {}
        self.create_requests: list[dict] = []
        self.runtime_requests: list[tuple[str, str, dict]] = []  # (operation, model id, body)
        self.get_calls = 0
        self.runtime_calls = 0
        self.answered: Counter[str] = Counter()  # runtime bodies answered 200 (paid), by canonical JSON
        self._throttled = 0
        self.holding = threading.Event()  # set once hold_count runtime calls are held
        self._release = threading.Event()
        self._held = 0
        self.configure()
        self._server: ThreadingHTTPServer | None = None

    # -- configuration -----------------------------------------------------------------------------
    def configure(self, *, answer: AnswerFn | None = None, final_status: str | None = None, final_message: str = "",
                  progress: tuple[str, ...] = PROGRESS, record_error: RecordErrorFn | None = None,
                  shuffle_outputs: bool = True, min_records: int = 100, throttle_first: int = 0,
                  runtime_error: RuntimeErrorFn | None = None, stopped_writes_partial: bool = True,
                  write_outputs: bool = True, hold_after: int | None = None, hold_count: int = 1,
                  max_live_jobs: int | None = None) -> None:
        """Set how the fake behaves from now on (jobs already created keep their state list).

        final_status: None -> Completed, or PartiallyCompleted when some record errs; or Failed,
        Expired, Stopped. record_error(recordId, modelInput) -> (errorCode, message) makes that batch
        record fail. throttle_first: answer that many runtime calls with 429 ThrottlingException.
        runtime_error(system, messages) -> (status, code, message) fails a runtime call.
        write_outputs=False: a finished job leaves nothing in S3 (a misconfigured role, say).
        hold_after=K: once K runtime calls were admitted (from this configure on), hold every further
        call unanswered (until the fake closes); ``holding`` is set when ``hold_count`` calls are held.
        max_live_jobs: the account's quota of unfinished batch jobs; one more is refused with 400
        ServiceQuotaExceededException.
        """
        self.answer = answer or default_answer
        self.final_status = final_status
        self.final_message = final_message
        self.progress = tuple(progress)
        self.record_error = record_error
        self.shuffle_outputs = shuffle_outputs
        self.min_records = min_records
        self.throttle_left = throttle_first
        self.runtime_error = runtime_error
        self.stopped_writes_partial = stopped_writes_partial
        self.write_outputs = write_outputs
        self.hold_after = hold_after
        self.hold_count = hold_count
        self._admitted = 0
        self.max_live_jobs = max_live_jobs
        self._held = 0
        self.holding.clear()

    def paid_twice(self) -> list[str]:
        """Runtime bodies answered more than once (each answer is a billed call)."""
        return [body for body, count in self.answered.items() if count > 1]

    @property
    def submissions(self) -> int:
        """Distinct jobs created (an idempotent retry with the same clientRequestToken is not one)."""
        return len(self.jobs)

    @property
    def throttled(self) -> int:
        return self._throttled

    # -- server lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> BedrockFake:  # noqa: PYI034 - never subclassed
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()  # held calls end (their client is gone)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- control plane -------------------------------------------------------------------------------
    def create_job(self, body: dict) -> tuple[int, dict]:
        self.create_requests.append(body)
        for key in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if not body.get(key):
                return 400, _error("ValidationException", f"{key} is required")
        problem = job_request_problem(body)
        if problem:
            return 400, _error("ValidationException", problem)
        token = body.get("clientRequestToken") or uuid.uuid4().hex
        with self.lock:
            if token in self.by_token:
                return 200, {"jobArn": self.jobs[self.by_token[token]].arn}
            live = sum(job.status not in FINAL for job in self.jobs.values())
            if self.max_live_jobs is not None and live >= self.max_live_jobs:
                return 400, _error("ServiceQuotaExceededException",
                                   f"{live} batch inference jobs are in progress; the quota is {self.max_live_jobs}")
            input_uri = body["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
            output_uri = body["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
            records, problem = self._read_input(input_uri)
            job_id = hashlib.sha256(token.encode()).hexdigest()[:12]
            arn = f"arn:aws:bedrock:{self.region}:{ACCOUNT}:model-invocation-job/{job_id}"
            final = self.final_status
            message = self.final_message
            if problem or len(records) < self.min_records:
                final, message = "Failed", problem or f"the job has {len(records)} records; the minimum is {self.min_records}"
            elif len(records) > MAX_RECORDS:
                final, message = "Failed", f"the job has {len(records)} records; the maximum is {MAX_RECORDS}"
            if final is None:
                errs = any(self.record_error and self.record_error(r["recordId"], r["modelInput"]) for r in records)
                final = "PartiallyCompleted" if errs else "Completed"
            job = FakeJob(arn, job_id, body["jobName"], token, body["modelId"], body["roleArn"], input_uri, output_uri,
                          dt.datetime.now(dt.timezone.utc), [*self.progress, final], records, message=message,
                          timeout_hours=int(body.get("timeoutDurationInHours", 24)))
            self.jobs[job_id] = job
            self.by_token[token] = job_id
        return 200, {"jobArn": arn}

    def _read_input(self, uri: str) -> tuple[list[dict], str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if key.endswith(".jsonl"):
            keys = [key]
        else:
            listing = self.s3.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/")
            keys = [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".jsonl")]
        records = []
        for k in keys:
            try:
                text = self.s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode("utf-8")
            except Exception as err:  # noqa: BLE001 - reported as the job's failure message
                return [], f"cannot read input {k}: {err}"
            for n, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    return [], f"{k}:{n}: not JSON"
                if "modelInput" not in rec:
                    return [], f"{k}:{n}: no modelInput"
                rec.setdefault("recordId", f"AUTO{len(records):07d}")
                rec["_file"] = k.rsplit("/", 1)[-1]
                records.append(rec)
        if not keys:
            return [], f"no .jsonl input under {uri}"
        return records, ""

    def find(self, identifier: str) -> FakeJob | None:
        return self.jobs.get(unquote(identifier).rsplit("/", 1)[-1])

    def get_job(self, identifier: str) -> tuple[int, dict]:
        with self.lock:
            self.get_calls += 1
            job = self.find(identifier)
            if job is None:
                return 404, _error("ResourceNotFoundException", f"no job {identifier}")
            job.step += 1  # one state further per poll
            if job.status in FINAL and not job.outputs_written:
                self._write_outputs(job)
            return 200, self._describe(job)

    def stop_job(self, identifier: str) -> tuple[int, dict]:
        with self.lock:
            job = self.find(identifier)
            if job is None:
                return 404, _error("ResourceNotFoundException", f"no job {identifier}")
            if job.status in FINAL:
                return 400, _error("ConflictException", f"job is {job.status}")
            job.states = job.states[: job.step + 1] + ["Stopping", "Stopped"]
        return 200, {}

    def list_jobs(self, query: dict) -> tuple[int, dict]:
        status = query.get("statusEquals", [None])[0]
        name = query.get("nameContains", [None])[0]
        with self.lock:
            summaries = [self._describe(j) for j in self.jobs.values()
                         if (status is None or j.status == status) and (name is None or name in j.name)]
        return 200, {"invocationJobSummaries": summaries}

    @staticmethod
    def _processed(job: FakeJob) -> int:
        """Records processed so far: a share of the total for each InProgress poll seen."""
        running = [i for i, state in enumerate(job.states) if state == "InProgress"]
        if not running or job.step < running[0]:
            return 0
        return len(job.records) * (min(job.step, running[-1]) - running[0] + 1) // (len(running) + 1)

    def _describe(self, job: FakeJob) -> dict:
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        done = job.status in FINAL
        out = {
            "jobArn": job.arn, "jobName": job.name, "modelId": job.model_id, "clientRequestToken": job.token,
            "roleArn": job.role_arn, "status": job.status, "submitTime": job.submit_time.isoformat(),
            "lastModifiedTime": now,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job.input_uri, "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
            "timeoutDurationInHours": job.timeout_hours,
            "totalRecordCount": len(job.records),
            # Counts grow while the job runs, as Bedrock's do; final counts once it ends.
            "processedRecordCount": job.success + job.errors if done else self._processed(job),
            "successRecordCount": job.success, "errorRecordCount": job.errors,
        }
        if job.message:
            out["message"] = job.message
        if done:
            out["endTime"] = now
        return out

    def _write_outputs(self, job: FakeJob) -> None:
        job.outputs_written = True
        if job.status in ("Failed", "Expired") or not self.write_outputs:
            return
        records = list(job.records)
        if job.status == "Stopped":
            if not self.stopped_writes_partial:
                return
            records = records[: len(records) // 2]
        by_file: dict[str, list[str]] = {}
        in_tok = out_tok = 0
        for rec in records:
            err = self.record_error(rec["recordId"], rec["modelInput"]) if self.record_error else None
            invalid = messages_problem(rec["modelInput"])
            if invalid:
                err = (400, f"ValidationException: {invalid}")
            line = {"recordId": rec["recordId"], "modelInput": rec["modelInput"]}
            if err:
                line["error"] = {"errorCode": err[0], "errorMessage": err[1]}
                job.errors += 1
            else:
                body = self.messages_response(rec["modelInput"])
                line["modelOutput"] = body
                in_tok += body["usage"]["input_tokens"]
                out_tok += body["usage"]["output_tokens"]
                job.success += 1
            by_file.setdefault(rec["_file"], []).append(json.dumps(line, ensure_ascii=False))
        bucket, _, prefix = job.output_uri.removeprefix("s3://").partition("/")
        base = f"{prefix.rstrip('/')}/{job.job_id}/" if prefix.strip("/") else f"{job.job_id}/"
        for name, lines in by_file.items():
            if self.shuffle_outputs:  # output order is not guaranteed: make sure callers join on recordId
                random.Random(job.job_id + name).shuffle(lines)
            self.s3.put_object(Bucket=bucket, Key=base + name + ".out", Body=("\n".join(lines) + "\n").encode())
        manifest = {"totalRecordCount": len(job.records), "processedRecordCount": len(records),
                    "successRecordCount": job.success, "errorRecordCount": job.errors,
                    "inputTokenCount": in_tok, "outputTokenCount": out_tok}
        self.s3.put_object(Bucket=bucket, Key=base + "manifest.json.out", Body=json.dumps(manifest).encode())

    # -- runtime -----------------------------------------------------------------------------------
    def _generate(self, system: str, messages: list, max_tokens: int) -> tuple[str, str, int, int]:
        text = self.answer(system, messages)
        stop = "end_turn"
        if len(text) > max_tokens:
            text, stop = text[:max_tokens], "max_tokens"
        in_tok = len(system) + sum(len(message_text(m["content"])) for m in messages)
        return text, stop, in_tok, len(text)

    def messages_response(self, body: dict) -> dict:
        text, stop, in_tok, out_tok = self._generate(system_text(body.get("system")), body.get("messages", []),
                                                     int(body.get("max_tokens", 1024)))
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": "fake",
                "content": [{"type": "text", "text": text}], "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": in_tok, "output_tokens": out_tok}}

    def runtime(self, operation: str, model_id: str, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.runtime_calls += 1
            self.runtime_requests.append((operation, model_id, body))
            if self.throttle_left > 0:
                self.throttle_left -= 1
                self._throttled += 1
                return 429, _error("ThrottlingException", "Too many requests, please wait before trying again.")
            # Counted at admission, under the lock: exactly hold_after calls get through, however many
            # arrive at once.
            hold = self.hold_after is not None and self._admitted >= self.hold_after
            self._admitted += not hold
            if hold:
                self._held += 1
                if self._held >= self.hold_count:
                    self.holding.set()
        if hold:
            self._release.wait()
            return 503, _error("ServiceUnavailableException", "held by the test")
        status, payload = self._answer_runtime(operation, body)
        if status == 200:
            with self.lock:
                self.answered[json.dumps([model_id, body], sort_keys=True, ensure_ascii=False)] += 1
        return status, payload

    def _answer_runtime(self, operation: str, body: dict) -> tuple[int, dict]:
        invalid = converse_problem(body) if operation == "converse" else messages_problem(body)
        if invalid:
            return 400, _error("ValidationException", invalid)
        if operation == "converse":
            system, messages = system_text(body.get("system")), body.get("messages", [])
            max_tokens = int(body.get("inferenceConfig", {}).get("maxTokens", 1024))
        else:
            system, messages = system_text(body.get("system")), body.get("messages", [])
            max_tokens = int(body.get("max_tokens", 1024))
        if self.runtime_error:
            failure = self.runtime_error(system, messages)
            if failure:
                return failure[0], _error(failure[1], failure[2])
        if operation == "invoke":
            return 200, self.messages_response(body)
        text, stop, in_tok, out_tok = self._generate(system, messages, max_tokens)
        return 200, {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop,
                     "usage": {"inputTokens": in_tok, "outputTokens": out_tok, "totalTokens": in_tok + out_tok},
                     "metrics": {"latencyMs": 1}}


def _error(code: str, message: str) -> dict:
    return {"__type": code, "message": message}


class _Handler(BaseHTTPRequestHandler):
    owner: BedrockFake
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: avoid a 40 ms delayed-ACK stall

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("x-amzn-ErrorType", payload.get("__type", "InternalServerException"))
        try:
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client was killed while its call was held
            pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts == ["model-invocation-jobs"]:
            return self._send(*self.owner.list_jobs(parse_qs(url.query)))
        if len(parts) == 2 and parts[0] == "model-invocation-job":
            return self._send(*self.owner.get_job(parts[1]))
        self._send(404, _error("UnknownOperationException", f"GET {url.path}"))

    def do_POST(self) -> None:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        body = self._body()
        if parts == ["model-invocation-job"]:
            return self._send(*self.owner.create_job(body))
        if len(parts) == 3 and parts[0] == "model-invocation-job" and parts[2] == "stop":
            return self._send(*self.owner.stop_job(parts[1]))
        if len(parts) == 3 and parts[0] == "model" and parts[2] in ("converse", "invoke"):
            return self._send(*self.owner.runtime(parts[2], unquote(parts[1]), body))
        self._send(404, _error("UnknownOperationException", f"POST {url.path}"))


def fast_botocore_retries(monkeypatch) -> None:
    """Scale botocore's real retry delays down for tests, keeping its retry logic.

    Throttling backoff is rand(0, 1) x 1 s x 2^attempt, and adaptive mode's client-side token
    bucket refills at no less than 0.5 requests/s after a throttle: right for AWS, tens of seconds
    for a test. Here the backoff base becomes 1 ms and the bucket's floor 500 requests/s.
    """
    from botocore.retries import adaptive, bucket, standard

    monkeypatch.setitem(standard.ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.001)
    monkeypatch.setitem(standard.ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "non_throttling_base_scale", 0.001)

    class FastBucket(bucket.TokenBucket):
        def __init__(self, max_rate, clock, min_rate=500.0):
            super().__init__(max_rate, clock, min_rate=min_rate)

    monkeypatch.setattr(adaptive.bucket, "TokenBucket", FastBucket)


@pytest.fixture
def bedrock_fake(aws_env, monkeypatch):
    """A running BedrockFake with boto3's bedrock and bedrock-runtime clients routed to it (S3 to moto)."""
    with BedrockFake(s3_endpoint=aws_env) as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", fake.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.url)
        yield fake
