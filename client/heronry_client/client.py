"""The REST API client: token auth, retries with backoff for idempotent requests, timeouts, cursor pagination as
iterators, and errors that carry the API's error codes (:mod:`heronry_client.errors`)."""

from __future__ import annotations

import io
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeAlias

import httpx

from .errors import HeronryError, RunFailed, TransportError, WaitTimeout, error_for

JSON: TypeAlias = Any
FileLike: TypeAlias = str | os.PathLike[str] | bytes | BinaryIO
RunRef: TypeAlias = int | Mapping[str, Any]

API_PREFIX = "/api/v1"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
TERMINAL_STATES = frozenset({"done", "failed", "cancelled"})
RUN_ACTIONS = ("pause", "resume", "cancel", "start", "retry")
MAX_IDS_PER_REQUEST = 500  # the server's bound on pairs (POST) and ids (GET) of …/queries/


def _run_id(run: RunRef) -> int:
    return int(run["id"]) if isinstance(run, Mapping) else int(run)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


class Client:
    """A Heronry API client.

    >>> client = Client.login("http://127.0.0.1:8000", "researcher", "heronry")
    >>> [p["slug"] for p in client.projects()]

    ``base_url`` is the server's address (``/api/v1`` is added unless already there). ``retries`` is how many
    times an idempotent request is repeated after a connection error, a timeout or a 429/502/503/504 answer,
    waiting ``backoff * 2**attempt`` seconds (with jitter, or the server's Retry-After) in between. A request
    that is not idempotent is repeated only when it never reached the server (the connection was refused).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.endswith(API_PREFIX):
            base += API_PREFIX
        self.base_url = base
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self._http = httpx.Client(base_url=base, timeout=timeout, transport=transport, follow_redirects=False)
        self.token: str | None = None
        self.last_no_query_reason: str | None = None
        """Why the last ``next_query`` found nothing (``done``, ``leased_by_others``, ``project_paused`` ...)."""
        if token:
            self.set_token(token)

    # --- session ---------------------------------------------------------------------------------------------
    @classmethod
    def login(cls, base_url: str, username: str, password: str, **kwargs: Any) -> Client:
        """A client authenticated with a token obtained for ``username`` / ``password``."""
        client = cls(base_url, **kwargs)
        try:
            client.obtain_token(username, password)
        except BaseException:
            client.close()
            raise
        return client

    def obtain_token(self, username: str, password: str) -> str:
        """POST /auth/token/; the client uses the token from then on. Not retried on 429 (a lock-out)."""
        data = self._request("POST", "/auth/token/", json={"username": username, "password": password})
        self.set_token(str(data["token"]))
        return str(data["token"])

    def set_token(self, token: str) -> None:
        self.token = token
        self._http.headers["Authorization"] = f"Token {token}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------------------------
    def _sleep_before_retry(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2**attempt)) * (0.5 + random.random() / 2)
        if retry_after is not None:
            delay = min(self.max_backoff, max(delay, retry_after))
        time.sleep(delay)

    def _send(
        self, method: str, url: str, *, idempotent: bool | None = None, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """Send with retries; returns a successful response (opened for streaming when ``stream``)."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
        attempt = 0
        while True:
            for value in (kwargs.get("files") or {}).values():  # rewind uploads before a repeat
                handle = value[1] if isinstance(value, tuple) else value
                if hasattr(handle, "seek"):
                    handle.seek(0)
            try:
                request = self._http.build_request(method, url, **kwargs)
                response = self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                if attempt < self.retries:  # never reached the server: safe to repeat anything
                    self._sleep_before_retry(attempt, None)
                    attempt += 1
                    continue
                raise TransportError(f"{method} {url}: {error}", code="connection_error") from error
            except httpx.TransportError as error:
                if idempotent and attempt < self.retries:
                    self._sleep_before_retry(attempt, None)
                    attempt += 1
                    continue
                code = "timeout" if isinstance(error, httpx.TimeoutException) else "connection_error"
                raise TransportError(f"{method} {url}: {error!r}", code=code) from error
            if response.is_success:
                return response
            if stream:
                response.read()
                response.close()
            retry_after = _retry_after(response)
            locked_out = response.status_code == 429 and "locked_out" in response.text
            if (
                response.status_code in RETRY_STATUSES
                and idempotent
                and not locked_out
                and attempt < self.retries
                and (retry_after is None or retry_after <= self.max_backoff)
            ):
                self._sleep_before_retry(attempt, retry_after)
                attempt += 1
                continue
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise error_for(response.status_code, body, retry_after=retry_after)

    def _request(self, method: str, url: str, *, idempotent: bool | None = None, **kwargs: Any) -> JSON:
        response = self._send(method, url, idempotent=idempotent, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, url: str, **params: Any) -> JSON:
        """GET a path under /api/v1 (or an absolute URL) and return its JSON."""
        return self._request("GET", url, params={k: v for k, v in params.items() if v is not None} or None)

    def paginate(self, url: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated list, following ``next`` links page by page as it is iterated."""
        page: JSON = self.get(url, **params)
        while True:
            yield from page["results"]
            if not page.get("next"):
                return
            page = self._request("GET", page["next"])

    def _download(self, url: str, destination: str | os.PathLike[str] | IO[bytes], **params: Any) -> int:
        """Stream a response body to a path or a binary file object; returns the bytes written. A path is written
        to ``<path>.part`` first and renamed at the end, so a broken download leaves no half file."""
        clean = {k: v for k, v in params.items() if v is not None} or None
        response = self._send("GET", url, params=clean, stream=True)
        written = 0
        try:
            if isinstance(destination, str | os.PathLike):
                path = Path(destination)
                partial = path.with_name(path.name + ".part")
                try:
                    with partial.open("wb") as handle:
                        for chunk in response.iter_bytes():
                            handle.write(chunk)
                            written += len(chunk)
                    partial.replace(path)
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
            else:
                for chunk in response.iter_bytes():
                    destination.write(chunk)
                    written += len(chunk)
        except httpx.TransportError as error:
            raise TransportError(f"GET {url}: the download broke off: {error!r}", code="connection_error") from error
        finally:
            response.close()
        return written

    # --- projects --------------------------------------------------------------------------------------------
    def projects(self) -> list[dict[str, Any]]:
        """Projects you belong to."""
        return list(self.get("/projects/"))

    def project(self, slug: str) -> dict[str, Any]:
        return dict(self.get(f"/projects/{slug}/"))

    def project_spec(self, slug: str) -> dict[str, Any]:
        """The project's spec (researchers): POSTing it with another slug creates an equal project."""
        return dict(self.get(f"/projects/{slug}/spec"))

    def create_project(self, spec: Mapping[str, Any] | str) -> dict[str, Any]:
        """Create a project from a project spec: a dict, or its YAML/JSON text (see the README's Project specs)."""
        body = {"spec": spec if isinstance(spec, str) else dict(spec)}
        return dict(self._request("POST", "/projects/", json=body))

    def create_project_from_file(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        return self.create_project(Path(path).read_text(encoding="utf-8"))

    # --- bringing data ---------------------------------------------------------------------------------------
    @staticmethod
    def _file(value: FileLike, name: str) -> tuple[str, BinaryIO] | tuple[str, bytes]:
        if isinstance(value, bytes):
            return (name, value)
        if isinstance(value, str | os.PathLike):
            path = Path(value)
            return (path.name, io.BytesIO(path.read_bytes()))
        return (getattr(value, "name", name).rsplit("/", 1)[-1], value)

    def upload_rollout(
        self,
        slug: str,
        npz: FileLike,
        *,
        video: FileLike | None = None,
        queries: int | None = None,
        fps: int | None = None,
        render: str | None = None,
    ) -> dict[str, Any]:
        """Upload one episode (.npz, optional .mp4); returns the ingesting run (``wait_for`` it). ``render="all"``
        makes every clip's video, not only the queried ones' (for pairs you ask yourself: :meth:`ask_pairs`)."""
        files: dict[str, Any] = {"file": self._file(npz, "rollout.npz")}
        if video is not None:
            files["video"] = self._file(video, "rollout.mp4")
        fields = {"queries": queries, "fps": fps, "render": render}
        data = {k: str(v) for k, v in fields.items() if v is not None}
        return dict(self._request("POST", f"/projects/{slug}/rollouts/", files=files, data=data))

    def import_minari(
        self, slug: str, dataset: str, *, max_episodes: int | None = None, queries: int | None = None
    ) -> dict[str, Any]:
        """Import a Minari dataset; returns the ingesting run."""
        body = {"dataset": dataset, "max_episodes": max_episodes, "queries": queries}
        body = {k: v for k, v in body.items() if v is not None}
        return dict(self._request("POST", f"/projects/{slug}/imports/minari", json=body))

    # --- clips, queries, judgments, rankings -----------------------------------------------------------------
    def clips(
        self, slug: str, *, iteration: int | None = None, run: RunRef | None = None, page_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every clip of the project (researchers see every field), fetched page by page as iterated, oldest
        first; ``run``: only the clips that run cut (an upload's, in the order of its episode's steps)."""
        run_id = None if run is None else _run_id(run)
        return self.paginate(f"/projects/{slug}/clips/", iteration=iteration, run=run_id, page_size=page_size)

    def ask_pairs(self, slug: str, pairs: Sequence[tuple[int, int]], *, priority: int = 0) -> list[dict[str, Any]]:
        """The queries asking these pairs of clip ids (researchers), made when missing; one per pair, in order,
        each with its status and answers as :meth:`query_answers` gives them. Asking again returns the same
        queries, so the request is retried like a GET. At most 500 pairs a request: longer lists are sent in
        chunks."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(pairs), MAX_IDS_PER_REQUEST):
            chunk = [[int(a), int(b)] for a, b in pairs[start : start + MAX_IDS_PER_REQUEST]]
            body = {"pairs": chunk, "priority": priority}
            data = self._request("POST", f"/projects/{slug}/queries/", idempotent=True, json=body)
            results.extend(data["results"])
        return results

    def query_answers(self, slug: str, queries: Sequence[int]) -> list[dict[str, Any]]:
        """Status and human answers of queries (researchers), in canonical terms: ``clip_a``, ``clip_b``,
        ``status``, ``answers_wanted``/``answers_given``, ``answers`` (counts of ``a``, ``b``, ``equal``,
        ``cant_tell``), ``target_a`` (P(clip_a better), equal = 0.5, can't tell left out; None without an
        informative answer) and ``majority`` (``a``, ``b``, ``tie`` or None). Unknown ids are left out."""
        results: list[dict[str, Any]] = []
        ids = [int(pk) for pk in queries]
        for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
            chunk = ",".join(str(pk) for pk in ids[start : start + MAX_IDS_PER_REQUEST])
            results.extend(self.get(f"/projects/{slug}/queries/", ids=chunk)["results"])
        return results

    def next_query(self, slug: str) -> dict[str, Any] | None:
        """Lease your next query: ``{"id", "left", "right", "lease", ...}``, or None when there is none now
        (``last_no_query_reason`` then holds the server's reason)."""
        data = self._request("POST", f"/projects/{slug}/queries/next/")
        self.last_no_query_reason = data.get("reason")
        query = data.get("query")
        return dict(query) if query else None

    def submit_judgment(
        self,
        query: int | Mapping[str, Any],
        choice: str,
        *,
        lease: str | None = None,
        client_id: str | uuid.UUID | None = None,
        time_spent_ms: int | None = None,
    ) -> dict[str, Any]:
        """Answer a leased query (``left``, ``right``, ``equal`` or ``cant_tell``). Idempotent on ``client_id``
        (one is made when not given), so it is safely retried."""
        if isinstance(query, Mapping):
            lease = lease or str(query["lease"])
            query_id = int(query["id"])
        else:
            query_id = int(query)
        if lease is None:
            raise ValueError("submit_judgment needs the lease token (pass the leased query itself)")
        body: dict[str, Any] = {"choice": choice, "lease": str(lease), "client_id": str(client_id or uuid.uuid4())}
        if time_spent_ms is not None:
            body["time_spent_ms"] = int(time_spent_ms)
        return dict(self._request("POST", f"/queries/{query_id}/judgments/", json=body, idempotent=True))

    def revise_judgment(self, judgment: int | Mapping[str, Any], choice: str) -> dict[str, Any]:
        """Change one of your answers (the earlier choice is kept as a revision on the server)."""
        judgment_id = int(judgment["id"]) if isinstance(judgment, Mapping) else int(judgment)
        return dict(self._request("PATCH", f"/judgments/{judgment_id}/", json={"choice": choice}))

    def undo_judgment(self, judgment: int | Mapping[str, Any]) -> dict[str, Any]:
        """Take back your last answer (within the server's undo window): the judgment is deleted and its pair
        comes back to you, leased; returns that leased query. Not retried (a repeat would find nothing to undo)."""
        judgment_id = int(judgment["id"]) if isinstance(judgment, Mapping) else int(judgment)
        return dict(self._request("POST", f"/judgments/{judgment_id}/undo/")["query"])

    def skip(self, lease: str) -> None:
        self._request("POST", f"/leases/{lease}/skip/")  # a repeat would answer 404: not retried

    def release(self, lease: str) -> None:
        self._request("POST", f"/leases/{lease}/release/", idempotent=True)

    def heartbeat(self, lease: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/leases/{lease}/heartbeat/", idempotent=True))

    def rankings(self, slug: str) -> list[dict[str, Any]]:
        return list(self.get(f"/projects/{slug}/rankings/"))

    def submit_ranking(
        self,
        slug: str,
        groups: list[list[str]],
        *,
        sigmas: Mapping[str, float] | None = None,
        comment: str = "",
    ) -> dict[str, Any]:
        """Your factor ranking: levels, most important first, e.g. ``[["angle"], ["speed", "torque"]]``."""
        body = {"groups": groups, "sigmas": dict(sigmas or {}), "comment": comment}
        return dict(self._request("POST", f"/projects/{slug}/rankings/", json=body))

    # --- runs ------------------------------------------------------------------------------------------------
    def runs(self, slug: str, *, kind: str | None = None) -> list[dict[str, Any]]:
        """The project's runs, newest first (at most 200)."""
        return list(self.get(f"/projects/{slug}/runs/", kind=kind))

    def start_run(self, slug: str, kind: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = {"kind": kind, "params": dict(params or {})}
        return dict(self._request("POST", f"/projects/{slug}/runs/", json=body))

    def start_iteration(
        self, slug: str, *, count: int = 1, settings: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The next loop iteration(s); ``settings`` overrides the project's loop settings."""
        body = {"kind": "iteration", "count": count, "settings": dict(settings or {})}
        return dict(self._request("POST", f"/projects/{slug}/runs/", json=body))

    def retrain(self, slug: str, **params: Any) -> dict[str, Any]:
        """Build preferences and train a new reward-model version (params: sources, cap, config, seed ...)."""
        return self.start_run(slug, "retrain", params)

    def generate_clips(self, slug: str, **params: Any) -> dict[str, Any]:
        """Roll out, cut and render clips (params: rollouts, steps, policies, queries, seed, render)."""
        return self.start_run(slug, "generate_clips", params)

    def run(self, run: RunRef) -> dict[str, Any]:
        return dict(self.get(f"/runs/{_run_id(run)}/"))

    def run_action(self, run: RunRef, action: str) -> dict[str, Any]:
        if action not in RUN_ACTIONS:
            raise ValueError(f"action must be one of {RUN_ACTIONS}")
        # Not retried after a timeout: a repeated cancel or retry may be refused once the first took effect.
        return dict(self._request("POST", f"/runs/{_run_id(run)}/", json={"action": action}))

    def pause(self, run: RunRef) -> dict[str, Any]:
        return self.run_action(run, "pause")

    def resume(self, run: RunRef) -> dict[str, Any]:
        return self.run_action(run, "resume")

    def cancel(self, run: RunRef) -> dict[str, Any]:
        return self.run_action(run, "cancel")

    def start(self, run: RunRef) -> dict[str, Any]:
        return self.run_action(run, "start")

    def retry(self, run: RunRef) -> dict[str, Any]:
        return self.run_action(run, "retry")

    def wait_for(
        self,
        run: RunRef,
        *,
        timeout: float | None = 3600.0,
        poll_interval: float = 2.0,
        progress: Callable[[dict[str, Any]], None] | None = None,
        raise_on_failure: bool = True,
    ) -> dict[str, Any]:
        """Poll a run until it is done, failed or cancelled; ``progress`` gets every state seen. Raises
        :class:`RunFailed` for a failed/cancelled run (unless ``raise_on_failure`` is false) and
        :class:`WaitTimeout` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.run(run)
            if progress is not None:
                progress(state)
            if state.get("state") in TERMINAL_STATES:
                if raise_on_failure and state["state"] != "done":
                    raise RunFailed(f"run {state['id']} {state['state']}: {state.get('error') or ''}".strip(), state)
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"run {state['id']} still {state.get('state')} after {timeout} s", state)
            remaining = poll_interval if deadline is None else min(poll_interval, max(0.0, deadline - time.monotonic()))
            time.sleep(remaining)

    # --- reward models ---------------------------------------------------------------------------------------
    def reward_models(self, slug: str) -> list[dict[str, Any]]:
        """The project's reward-model versions, newest first."""
        return list(self.get(f"/projects/{slug}/reward-models/"))

    def reward_model_files(self, model: int | Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """(safetensors weights, parsed JSON metadata) of a reward model."""
        model_id = int(model["id"]) if isinstance(model, Mapping) else int(model)
        weights = io.BytesIO()
        self._download(f"/reward-models/{model_id}/weights", weights, part="weights")
        metadata = io.BytesIO()
        self._download(f"/reward-models/{model_id}/weights", metadata, part="metadata")
        return weights.getvalue(), json.loads(metadata.getvalue())

    def download_reward_model(
        self, model: int | Mapping[str, Any], directory: str | os.PathLike[str]
    ) -> tuple[Path, Path]:
        """Write ``reward_model.safetensors`` and ``reward_model.json`` into ``directory``; returns both paths."""
        model_id = int(model["id"]) if isinstance(model, Mapping) else int(model)
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        weights, metadata = folder / "reward_model.safetensors", folder / "reward_model.json"
        self._download(f"/reward-models/{model_id}/weights", weights, part="weights")
        self._download(f"/reward-models/{model_id}/weights", metadata, part="metadata")
        return weights, metadata

    def latest_reward_model(self, slug: str) -> dict[str, Any]:
        """The newest reward model that has weights."""
        for model in self.reward_models(slug):
            if model.get("weights_url"):
                return model
        raise HeronryError(f"project {slug!r} has no reward model with weights yet", code="not_ready")

    # --- policies --------------------------------------------------------------------------------------------
    def policies(self, slug: str) -> list[dict[str, Any]]:
        """The project's trained policies (newest first), as the runs that trained them report them: ``id``,
        ``algorithm``, ``timesteps``, ``reward_model``, ``evaluation``, ``video_episode``, ``download_url``,
        ``video_url`` (None until the evaluation video is rendered), plus the ``run``."""
        return [{**run["policy"], "run": run["id"]} for run in self.runs(slug) if run.get("policy")]

    def download_policy(self, policy: int | Mapping[str, Any], destination: str | os.PathLike[str] | IO[bytes]) -> int:
        """A policy's Stable-Baselines3 zip to a path or binary file; returns the bytes written. Load its weights
        with ``model.set_parameters(path)`` (``PPO.load`` would unpickle the zip's objects)."""
        policy_id = int(policy["id"]) if isinstance(policy, Mapping) else int(policy)
        return self._download(f"/policies/{policy_id}/checkpoint", destination)

    def download_policy_video(
        self, policy: int | Mapping[str, Any], destination: str | os.PathLike[str] | IO[bytes]
    ) -> int:
        """A policy's evaluation episode (MP4, the episode of ``video_episode``) to a path or binary file; returns
        the bytes written. :class:`NotFound` while the policy has no video yet (``video_url`` is None)."""
        policy_id = int(policy["id"]) if isinstance(policy, Mapping) else int(policy)
        return self._download(f"/policies/{policy_id}/video", destination)

    # --- exports ---------------------------------------------------------------------------------------------
    def export_judgments(
        self,
        slug: str,
        destination: str | os.PathLike[str] | IO[bytes],
        *,
        format: str = "jsonl",  # noqa: A002
    ) -> int:
        """Stream every judgment (``jsonl`` or ``csv``) to a path or binary file; returns the bytes written."""
        return self._download(f"/projects/{slug}/export/judgments", destination, format=format)

    def export_preferences(
        self,
        slug: str,
        destination: str | os.PathLike[str] | IO[bytes],
        *,
        format: str = "jsonl",  # noqa: A002  (the API's query parameter)
        preference_set: int | None = None,
    ) -> int:
        """Stream a preference set (``jsonl``, ``csv``, ``parquet`` or ``uni-rlhf``; default the newest set) to a
        file."""
        url = f"/projects/{slug}/export/preferences"
        return self._download(url, destination, format=format, set=preference_set)

    def export_uni_rlhf(
        self,
        slug: str,
        destination: str | os.PathLike[str] | IO[bytes],
        *,
        preference_set: int | None = None,
    ) -> int:
        """A dataset project's preference set in Preference Transformer / Uni-RLHF's layout: an ``.npz`` of plain
        arrays (``start_indices``, ``start_indices_2``, ``query_length``, one-hot ``labels``, the source
        episodes); load it with ``numpy.load(path, allow_pickle=False)``."""
        return self.export_preferences(slug, destination, format="uni-rlhf", preference_set=preference_set)

    def start_export(self, slug: str, what: str, *, format: str = "jsonl") -> dict[str, Any]:  # noqa: A002
        """Start an asynchronous export of ``judgments``, ``clips`` or ``rankings`` (written to storage by a
        worker; ``export.ready`` is sent when done); returns the job (``id``, ``status``, ``progress`` ...)."""
        body = {"what": what, "format": format}
        return dict(self._request("POST", f"/projects/{slug}/exports/", json=body))

    def exports(self, slug: str) -> list[dict[str, Any]]:
        """The project's newest asynchronous exports."""
        return list(self.get(f"/projects/{slug}/exports/"))

    def export_job(self, job: int | Mapping[str, Any]) -> dict[str, Any]:
        job_id = int(job["id"]) if isinstance(job, Mapping) else int(job)
        return dict(self.get(f"/exports/{job_id}/"))

    def wait_for_export(
        self,
        job: int | Mapping[str, Any],
        *,
        timeout: float | None = 3600.0,
        poll_interval: float = 2.0,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll an asynchronous export until it is done; raises :class:`RunFailed` if it failed and
        :class:`WaitTimeout` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.export_job(job)
            if progress is not None:
                progress(state)
            if state["status"] == "done":
                return state
            if state["status"] == "failed":
                raise RunFailed(f"export {state['id']} failed: {state.get('error') or ''}".strip(), state)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"export {state['id']} still {state['status']} after {timeout} s", state)
            remaining = poll_interval if deadline is None else min(poll_interval, max(0.0, deadline - time.monotonic()))
            time.sleep(remaining)

    def download_export(self, job: int | Mapping[str, Any], destination: str | os.PathLike[str] | IO[bytes]) -> int:
        """The file of a finished asynchronous export to a path or binary file; returns the bytes written."""
        job_id = int(job["id"]) if isinstance(job, Mapping) else int(job)
        return self._download(f"/exports/{job_id}/download", destination)

    def iter_judgments(self, slug: str) -> Iterator[dict[str, Any]]:
        """Every judgment as a dict, streamed from the JSON Lines export."""
        response = self._send("GET", f"/projects/{slug}/export/judgments", params={"format": "jsonl"}, stream=True)
        try:
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)
        finally:
            response.close()

    # --- webhooks ----------------------------------------------------------------------------------------------

    def webhooks(self, slug: str) -> list[dict[str, Any]]:
        """The project's webhook endpoints (researchers)."""
        return list(self.get(f"projects/{slug}/webhooks/"))

    def create_webhook(
        self, slug: str, url: str, events: Sequence[str], *, description: str = "", active: bool = True
    ) -> dict[str, Any]:
        """Register an endpoint for ``events``; the answer carries its ``whsec_…`` secret, shown this once."""
        body = {"url": url, "events": list(events), "description": description, "is_active": active}
        created: dict[str, Any] = self._request("POST", f"projects/{slug}/webhooks/", json=body)
        return created

    def update_webhook(self, webhook: int, **fields: Any) -> dict[str, Any]:
        """Change an endpoint's ``url``, ``events``, ``description`` or ``is_active``."""
        updated: dict[str, Any] = self._request("PATCH", f"webhooks/{webhook}/", json=fields)
        return updated

    def delete_webhook(self, webhook: int) -> None:
        self._request("DELETE", f"webhooks/{webhook}/")

    def webhook_deliveries(self, webhook: int) -> list[dict[str, Any]]:
        """The endpoint's newest deliveries: event, status, response code, attempts, error."""
        return list(self.get(f"webhooks/{webhook}/deliveries/"))

    # --- named API tokens ---------------------------------------------------------------------------------------

    def tokens(self) -> list[dict[str, Any]]:
        """Your named API tokens (their secrets are never listed)."""
        return list(self.get("auth/tokens/"))

    def create_token(
        self, name: str, *, project: str | None = None, read_only: bool = False, expires_at: str | None = None
    ) -> dict[str, Any]:
        """A named token, optionally limited to one project (slug) and to reading; ``token`` is its secret, shown
        this once. Only a login token or session may manage tokens."""
        body: dict[str, Any] = {"name": name, "read_only": read_only}
        if project is not None:
            body["project"] = project
        if expires_at is not None:
            body["expires_at"] = expires_at
        created: dict[str, Any] = self._request("POST", "auth/tokens/", json=body)
        return created

    def revoke_token(self, token: int) -> None:
        self._request("DELETE", f"auth/tokens/{token}/")
