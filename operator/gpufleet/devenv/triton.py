"""A real Triton Inference Server (from the nvidia-pytriton wheel) on CPU, with generated models.

Each model is a Python-backend model whose `execute` sleeps a configurable service time per batch:
a stand-in for GPU work that still goes through Triton's real scheduler, dynamic batcher, statistics
and /metrics, so tests see Triton's exact metric shapes and values.

Why a separate runtime venv (default ~/.cache/gpufleet/triton-venv): the wheel's Python backend stub
(Triton 2.51) is built with a pybind11 that misreads numpy 2 arrays (inputs arrive truncated and
outputs fail with "output tensor shape does not match size of output"), and the wheel pins
numpy<2, which conflicts with the project's numpy 2 / pandas 3. So the stub runs on its own small
venv holding only `nvidia-pytriton` (installed --no-deps; we use its server files, not its Python
API) and numpy<2; the project's venv only needs tritonclient.

    with TritonServer([ModelSpec("chat", service_time_s=0.01)]) as triton:
        triton.http_address     # "127.0.0.1:<port>" for tritonclient.http
        triton.metrics_address  # "127.0.0.1:<port>" to scrape /metrics
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gpufleet.devenv._proc import LOOPBACK, free_ports, http_ok, stop_process, wait_until

PYTRITON_VERSION = "0.7.0"
DEFAULT_VENV = Path.home() / ".cache" / "gpufleet" / "triton-venv"


def runtime_venv() -> Path:
    return Path(os.environ.get("GPUFLEET_TRITON_VENV", DEFAULT_VENV))


@dataclass(frozen=True)
class TritonRuntime:
    """Where the server, the Python backend and the stub of the runtime venv live."""

    venv: Path
    site_packages: Path
    python_version: str  # "3.11": picks the matching prebuilt stub

    @property
    def home(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def server(self) -> Path:
        return self.home / "bin" / "tritonserver"

    @property
    def stub(self) -> Path:
        return self.home / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"

    @property
    def libs(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"

    def complete(self) -> bool:
        return self.server.is_file() and self.stub.is_file() and (self.home / "backends" / "python").is_dir()


def find_runtime(venv: Path | None = None) -> TritonRuntime | None:
    """The runtime venv if it holds a usable tritonserver, else None."""
    venv = venv or runtime_venv()
    for sp in sorted(venv.glob("lib/python3.*/site-packages")):
        version = sp.parent.name.removeprefix("python")
        rt = TritonRuntime(venv=venv, site_packages=sp, python_version=version)
        if rt.complete():
            return rt
    return None


def is_available() -> bool:
    return find_runtime() is not None


def ensure_runtime(venv: Path | None = None, *, quiet: bool = True) -> TritonRuntime:
    """Find the runtime venv, or create it with this interpreter's base Python (needs PyPI access)."""
    venv = venv or runtime_venv()
    found = find_runtime(venv)
    if found is not None:
        return found
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Several test sessions may start at once: one creates the venv, the others wait and reuse it.
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_runtime(venv)
        if found is not None:
            return found
        # `python -m venv` run from a venv bases the new one on the base interpreter: same version,
        # so the wheel's stub for this Python version matches.
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        pip += ["-q"] if quiet else []
        subprocess.run([*pip, "--no-deps", f"nvidia-pytriton=={PYTRITON_VERSION}", "numpy>=1.21,<2"], check=True)
    found = find_runtime(venv)
    if found is None:
        raise RuntimeError(f"installed nvidia-pytriton=={PYTRITON_VERSION} into {venv} but found no "
                           f"tritonserver and Python {sys.version_info.major}.{sys.version_info.minor} stub")
    return found


@dataclass(frozen=True)
class ModelSpec:
    """A generated Python-backend model: one FP32 input/output of shape [1] per request, echoed back
    after sleeping `service_time_s` per executed batch."""

    name: str
    service_time_s: float = 0.01
    max_batch_size: int = 4
    max_queue_delay_us: int = 0  # dynamic batcher: how long to hold a batch open for more requests
    instances: int = 1
    # Decoupled (streaming) transaction policy: responses go through a response sender, and Triton
    # records the first-response histogram for it (--metrics-config histogram_latencies=true).
    # Served over HTTP by the generate extension (/v2/models/<name>/generate_stream).
    decoupled: bool = False


_MODEL_PY = textwrap.dedent('''\
    """Generated by gpufleet.devenv.triton: echo the input after a service-time sleep per batch."""
    import json
    import time

    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            params = json.loads(args["model_config"]).get("parameters", {})
            self.service_time_s = float(params["service_time_s"]["string_value"])

        def execute(self, requests):
            # In the server's log: a test can tell an executing request from a queued one by it.
            pb_utils.Logger.log_info(f"executing a batch of {len(requests)}")
            time.sleep(self.service_time_s)  # stands in for the GPU's work on the whole batch
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
            return responses
    ''')

_DECOUPLED_MODEL_PY = textwrap.dedent('''\
    """Generated by gpufleet.devenv.triton: a decoupled model; the first response after a
    service-time sleep, a second one half of it later, then the final flag."""
    import json
    import time

    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            params = json.loads(args["model_config"]).get("parameters", {})
            self.service_time_s = float(params["service_time_s"]["string_value"])

        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                time.sleep(self.service_time_s)  # the time to the first token
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
                time.sleep(self.service_time_s / 2)  # the rest of the generation
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
    ''')


def model_config(m: ModelSpec) -> str:
    if m.decoupled:  # no batch dimension: the generate extension sends one request's tensors
        return textwrap.dedent(f'''\
            name: "{m.name}"
            backend: "python"
            max_batch_size: 0
            model_transaction_policy {{ decoupled: true }}
            input [{{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 1 ] }}]
            output [{{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 1 ] }}]
            instance_group [{{ kind: KIND_CPU, count: {m.instances} }}]
            parameters {{ key: "service_time_s" value {{ string_value: "{m.service_time_s}" }} }}
            ''')
    return textwrap.dedent(f'''\
        name: "{m.name}"
        backend: "python"
        max_batch_size: {m.max_batch_size}
        input [{{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 1 ] }}]
        output [{{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 1 ] }}]
        dynamic_batching {{ max_queue_delay_microseconds: {m.max_queue_delay_us} }}
        instance_group [{{ kind: KIND_CPU, count: {m.instances} }}]
        parameters {{ key: "service_time_s" value {{ string_value: "{m.service_time_s}" }} }}
        ''')


def write_model_repository(root: Path, models: Sequence[ModelSpec]) -> Path:
    for m in models:
        (root / m.name / "1").mkdir(parents=True, exist_ok=True)
        (root / m.name / "config.pbtxt").write_text(model_config(m))
        (root / m.name / "1" / "model.py").write_text(_DECOUPLED_MODEL_PY if m.decoupled else _MODEL_PY)
    return root


def _backend_dir(rt: TritonRuntime, root: Path) -> Path:
    """A private backends/ dir: the Python backend's files plus the stub for our Python version,
    linked rather than copied into site-packages, so the installed wheel stays untouched."""
    python = root / "python"
    python.mkdir(parents=True, exist_ok=True)
    src = rt.home / "backends" / "python"
    for f in [*src.iterdir(), rt.stub]:
        if f.is_file():
            link = python / f.name
            if not link.exists():
                link.symlink_to(f)
    return root


class TritonServer:
    """tritonserver as a child process (own process group) on loopback HTTP, gRPC and metrics ports."""

    def __init__(self, models: Sequence[ModelSpec], *, runtime: TritonRuntime | None = None,
                 workdir: Path | None = None, exit_timeout_s: int = 5,
                 metrics_config: Sequence[str] = ()) -> None:
        """`metrics_config`: `--metrics-config` settings, e.g. `summary_latencies=true` (a request
        latency summary with quantiles) or `histogram_latencies=true` (the first-response
        histogram of decoupled models)."""
        if not models:
            raise ValueError("at least one model")
        self.models = list(models)
        self.metrics_config = list(metrics_config)
        self.runtime = runtime
        self.exit_timeout_s = exit_timeout_s
        self._given_workdir = workdir
        self.workdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0

    @property
    def http_address(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_address(self) -> str:
        return f"{LOOPBACK}:{self.metrics_port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "tritonserver.log"

    def _ready(self) -> bool:
        # Plain HTTP here (the readiness *adapter* is gpufleet.adapters.triton.model_ready):
        # the server and every model must be READY, and /metrics answer: tritonserver starts its
        # metrics endpoint after the HTTP one (make test saw /health/ready answer and /metrics refuse).
        base = f"http://{self.http_address}/v2"
        return (http_ok(f"{base}/health/ready")
                and all(http_ok(f"{base}/models/{m.name}/ready") for m in self.models)
                and http_ok(f"http://{self.metrics_address}/metrics"))

    def start(self, *, timeout_s: float = 90.0) -> TritonServer:
        if self.proc is not None:
            raise RuntimeError("already started")
        rt = self.runtime or find_runtime()
        if rt is None:
            raise FileNotFoundError(f"no tritonserver runtime in {runtime_venv()}: call ensure_runtime() "
                                    "(or run hack/deps.sh)")
        self.workdir = self._given_workdir or Path(tempfile.mkdtemp(prefix="gpufleet-triton-"))
        repo = write_model_repository(self.workdir / "models", self.models)
        backends = _backend_dir(rt, self.workdir / "backends")
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(rt.libs), os.environ.get("LD_LIBRARY_PATH")])),
            # The stub embeds Python and finds its site-packages (numpy<2) from the `python3` on PATH.
            "PATH": os.pathsep.join([str(rt.venv / "bin"), os.environ.get("PATH", "")]),
        }
        env.pop("PYTHONPATH", None)  # keep the project's packages (numpy 2) out of the stub
        args = [
            str(rt.server), f"--model-repository={repo}", f"--backend-directory={backends}",
            f"--http-address={LOOPBACK}", f"--http-port={self.http_port}",
            f"--grpc-address={LOOPBACK}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={LOOPBACK}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false", "--allow-cpu-metrics=true",
            f"--exit-timeout-secs={self.exit_timeout_s}", "--log-verbose=0",
            *(f"--metrics-config={setting}" for setting in self.metrics_config),
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=self.workdir, start_new_session=True)
        try:
            wait_until(self._ready, proc=self.proc, log=self.log_path, timeout_s=timeout_s,
                       what=f"tritonserver (http {self.http_port})")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, *, timeout_s: float | None = None) -> None:
        # Triton waits up to --exit-timeout-secs for in-flight requests, then unloads models.
        stop_process(self.proc, timeout_s=timeout_s or self.exit_timeout_s + 15.0, group=True)
        self.proc = None
        if self.workdir is not None and self._given_workdir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m gpufleet.devenv.triton --ensure`: create the runtime venv (used by hack/deps.sh)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gpufleet.devenv.triton")
    parser.add_argument("--ensure", action="store_true", help="create the runtime venv if missing")
    args = parser.parse_args(argv)
    rt = ensure_runtime() if args.ensure else find_runtime()
    print(json.dumps(None if rt is None else {"venv": str(rt.venv), "server": str(rt.server),
                                               "python": rt.python_version}))
    return 0 if rt is not None else 1


if __name__ == "__main__":
    sys.exit(main())
