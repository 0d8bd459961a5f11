"""The Kubernetes API, thinly: the calls gpufleet makes, each with a request timeout, retried with
back-off and jitter on 409, 429 and 5xx answers and on dropped connections (`with_retries`),
within the same timeout budget.

`KubeAPI` is the Protocol the rest of the operator depends on (the kopf handlers and
adapters.kubefleet); `Kube` implements it over the typed and dynamic clients. Unit tests use a
recording fake of the same Protocol (tests/fakes.py).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol, TypeVar, runtime_checkable

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from gpufleet.adapters import manifests
from gpufleet.adapters.pods import trim_pod
from gpufleet.api.models import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

FIELD_MANAGER = "gpufleet"
T = TypeVar("T")
Timeout = tuple[float, float]  # (connect, read) seconds, as the clients' _request_timeout

# Answers worth another try: a conflict on the object (409: modified meanwhile, or an apply racing
# a create), throttling (429: API Priority and Fairness, or max-in-flight), and the server's own
# failures (500, 502, 503: restarting, 504: etcd slow). Everything else is the request's fault.
RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
# A connection refused (the API server restarting) or dropped mid-request. Not a read timeout:
# that attempt already used its share of the budget.
RETRY_ERRORS: tuple[type[BaseException], ...] = (MaxRetryError, NewConnectionError, ProtocolError)
RETRY_BASE_S = 0.1  # first back-off (before jitter); doubles per attempt
RETRY_CAP_S = 2.0  # longest back-off between two attempts


def with_retries(call: Callable[[Timeout], T], *, timeout: Timeout, budget_s: float, what: str,
                 statuses: Collection[int] = RETRY_STATUSES, sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random) -> T:
    """`call(timeout)` until it answers, retrying the answers in `statuses` and dropped connections
    with exponential back-off and full jitter (each wait uniform in [0, min(cap, base x 2^n)], a
    429's Retry-After honoured), all within `budget_s`: each attempt's timeout is cut to what is
    left of the budget, and when the next wait would not fit, the last error is raised. A failing
    API server thus costs a tick at most its usual request timeout, not attempts x timeout."""
    deadline = clock() + budget_s
    attempt = 0
    while True:
        left = max(deadline - clock(), 0.05)
        try:
            return call((min(timeout[0], left), min(timeout[1], left)))
        except ApiException as exc:
            if exc.status not in statuses:
                raise
            error: BaseException = exc
            after = _retry_after(exc) if exc.status == 429 else 0.0
        except RETRY_ERRORS as exc:
            error, after = exc, 0.0
        delay = max(after, rand() * min(RETRY_CAP_S, RETRY_BASE_S * 2 ** attempt))
        if clock() + delay >= deadline - 0.05:
            raise error
        attempt += 1
        log.info("%s: %s, attempt %d in %.2fs", what, _short(error), attempt + 1, delay)
        sleep(delay)


def _retry_after(exc: ApiException) -> float:
    try:
        return max(0.0, float((exc.headers or {}).get("Retry-After", 0)))
    except (TypeError, ValueError):
        return 0.0


def _short(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return type(error).__name__


class NotOwned(Exception):
    """An object of a child's name exists and the InferenceService does not control it."""

    def __init__(self, kind: str, name: str, holder: str) -> None:
        super().__init__(f"{kind} {name} exists and is {holder}: gpufleet neither adopts nor overwrites it "
                         f"(delete or rename it)")
        self.kind = kind
        self.name = name


class ServiceGone(Exception):
    """The InferenceService itself is not there any more (its status patch and a read both 404):
    whatever loop ticks for it has nothing left to decide for."""


@runtime_checkable
class KubeAPI(Protocol):
    def scale(self, namespace: str, name: str, replicas: int, *, current: int | None) -> bool: ...

    def patch_pod_metadata(self, namespace: str, name: str, *, labels: dict[str, str | None] | None = None,
                           annotations: dict[str, str | None] | None = None) -> dict[str, Any] | None: ...

    def evict_pod(self, namespace: str, name: str) -> bool: ...


class Kube:
    """Thin wrapper over the typed clients, returning plain dicts. Every call has a request
    timeout, so a hung API server fails a tick instead of blocking a worker forever."""

    def __init__(self, api_client: client.ApiClient | None = None, *, timeout_s: float = 10.0,
                 retry_budget_s: float | None = None) -> None:
        self.api = api_client or client.ApiClient()
        self.timeout = (min(timeout_s, 5.0), timeout_s)  # (connect, read)
        # Every call, retries included, ends within this (default: one request's timeout).
        self.budget_s = retry_budget_s if retry_budget_s is not None else timeout_s
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self._dynamic: DynamicClient | None = None
        self._dynamic_lock = threading.Lock()  # one discovery, not one per handler starting at once

    def plain(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    # -- children -------------------------------------------------------------------------

    @property
    def dynamic(self) -> DynamicClient:
        # Raw dicts through the dynamic client: the typed client's models reject valid user
        # templates (e.g. an integer `nvidia.com/gpu: 1` where its model wants a string).
        if self._dynamic is not None:
            return self._dynamic
        with self._dynamic_lock:
            if self._dynamic is None:
                self._dynamic = DynamicClient(self.api)
            return self._dynamic

    def resource(self, api_version: str, kind: str) -> Any:
        """The dynamic client's resource for a kind, looked up once: each lookup searches the
        discovered API groups in Python (make chaos: a restarted operator's resume handlers spent
        most of their time there, holding the GIL its first ticks needed)."""
        cache: dict[tuple[str, str], Any] = self.__dict__.setdefault("_resources", {})
        found = cache.get((api_version, kind))
        if found is None:
            found = cache[(api_version, kind)] = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return found

    def apply_child(self, namespace: str, body: dict[str, Any], *, replicas: int | None = None) -> str:
        """Create the child, or server-side apply it. Returns "created", "updated" or "unchanged".

        Deployments are applied without `replicas`: that field is written only through /scale,
        so a template change never resets the fleet size.

        An existing object of the child's name that the body's controller (the InferenceService,
        by uid) does not control is neither adopted nor overwritten: NotOwned is raised. Applies
        to an owned object carry its uid as a precondition, so an object deleted and created
        again by someone else between the read and the write is not written either.
        """
        return with_retries(lambda timeout: self._apply_child(namespace, body, replicas, timeout),
                            timeout=self.timeout, budget_s=self.budget_s,
                            what=f"apply {body['kind']} {namespace}/{body['metadata']['name']}")

    def _apply_child(self, namespace: str, body: dict[str, Any], replicas: int | None, timeout: Timeout) -> str:
        # One attempt, from the read: a create that lost a race (409) is retried as a whole, and
        # the object found then is checked for its owner like any other.
        resource = self.resource(body["apiVersion"], body["kind"])
        name = body["metadata"]["name"]
        owner = manifests.controller_of(body["metadata"])
        try:
            current = resource.get(name=name, namespace=namespace, _request_timeout=timeout).to_dict()
        except NotFoundError:
            create_body = body
            if replicas is not None:
                create_body = {**body, "spec": {**body["spec"], "replicas": replicas}}
            resource.create(body=create_body, namespace=namespace, field_manager=FIELD_MANAGER,
                            _request_timeout=timeout)
            return "created"
        if owner is not None and not manifests.owned_by(current["metadata"], owner.get("uid")):
            raise NotOwned(body["kind"], name, manifests.describe_owner(current["metadata"]))
        guarded = {**body, "metadata": {**body["metadata"], "uid": current["metadata"]["uid"]}}
        after = resource.server_side_apply(
            body=guarded, name=name, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True,
            _request_timeout=timeout,
        ).to_dict()
        changed = current["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion")
        return "updated" if changed else "unchanged"

    def scale(self, namespace: str, name: str, replicas: int, *, current: int | None) -> bool:
        """Set a Deployment's size through its /scale subresource; False when the watch cache
        says it is already there (`current`) or the Deployment does not exist yet (None: the
        create/update handler makes it)."""
        if current is None or current == replicas:
            return False
        try:
            with_retries(lambda timeout: self.apps.patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": replicas}}, field_manager=FIELD_MANAGER,
                _request_timeout=timeout,
            ), timeout=self.timeout, budget_s=self.budget_s, what=f"scale {namespace}/{name}")
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile (the service is going away)
                return False
            raise
        return True

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource. A NaN or Infinity is refused here (ValueError
        naming the fields): the client would encode it as `Infinity`, which is not JSON."""
        try:
            json.dumps(status, allow_nan=False)
        except ValueError:
            bad = ", ".join(_non_finite(status)) or "?"
            raise ValueError(f"status of {namespace}/{name} holds a non-finite number at {bad}") from None
        try:
            with_retries(lambda timeout: self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}, field_manager=FIELD_MANAGER,
                _request_timeout=timeout,
            ), timeout=self.timeout, budget_s=self.budget_s, what=f"patch status of {namespace}/{name}")
        except ApiException as exc:
            if exc.status == 404 and not self._service_exists(namespace, name):
                raise ServiceGone(f"InferenceService {namespace}/{name} is gone") from exc
            raise

    def _service_exists(self, namespace: str, name: str) -> bool:
        """Look the InferenceService up (a 404 on a patch could be a subresource hiccup); by a
        list on its name, the verb the operator already has for kopf's watch."""
        try:
            found: Any = with_retries(lambda timeout: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, field_selector=f"metadata.name={name}", _request_timeout=timeout,
            ), timeout=self.timeout, budget_s=self.budget_s, what=f"look up {namespace}/{name}")
        except ApiException as exc:
            if exc.status == 404:  # the namespace or the CRD is gone with it
                return False
            raise
        return bool(found.get("items"))

    # -- shadow mode: reads only ----------------------------------------------------------

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Deployment as a plain dict (spec.replicas, spec.selector, ...); None when it does not exist."""
        try:
            obj = with_retries(lambda timeout: self.apps.read_namespaced_deployment(
                name, namespace, _request_timeout=timeout,
            ), timeout=self.timeout, budget_s=self.budget_s, what=f"read deployment {namespace}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        result: dict[str, Any] = self.plain(obj)
        return result

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods a label selector matches, trimmed as the watch caches keep them."""
        pods = with_retries(lambda timeout: self.core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=timeout,
        ), timeout=self.timeout, budget_s=self.budget_s, what=f"list pods {namespace} {selector}")
        return [trim_pod(self.plain(p)) for p in pods.items]

    # -- pods -----------------------------------------------------------------------------

    def patch_pod_metadata(self, namespace: str, name: str, *, labels: dict[str, str | None] | None = None,
                           annotations: dict[str, str | None] | None = None) -> dict[str, Any] | None:
        """Patch a pod's labels/annotations; the pod after the patch, or None when it is gone."""
        meta: dict[str, Any] = {}
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        try:
            pod = with_retries(lambda timeout: self.core.patch_namespaced_pod(
                name, namespace, {"metadata": meta}, field_manager=FIELD_MANAGER, _request_timeout=timeout,
            ), timeout=self.timeout, budget_s=self.budget_s, what=f"patch pod {namespace}/{name}")
        except ApiException as exc:
            if exc.status == 404:  # gone meanwhile: nothing to do
                return None
            raise
        return trim_pod(self.plain(pod))

    def evict_pod(self, namespace: str, name: str) -> bool:
        """Evict a pod through the Eviction API (graceful, like `kubectl drain`: its containers get
        their termination grace period, and PodDisruptionBudgets are honoured); False when it was
        already gone."""
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        try:
            # Not on 429: that is a PodDisruptionBudget refusing, which waiting seconds will not
            # change (the next tick asks again).
            with_retries(lambda timeout: self.core.create_namespaced_pod_eviction(
                name, namespace, body, _request_timeout=timeout,
            ), timeout=self.timeout, budget_s=self.budget_s, what=f"evict pod {namespace}/{name}",
                statuses=RETRY_STATUSES - {429})
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _non_finite(value: Any, path: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def adopt(children: list[dict[str, Any]], owner: kopf.Body) -> None:
    """Owner references (so deleting the InferenceService deletes its children) and namespace."""
    kopf.adopt(children, owner=owner)
