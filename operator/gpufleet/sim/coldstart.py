"""How long a pod takes from creation to Ready, node included (issue 16 item 2).

Two models, one interface (SimFleet asks each start for its node part and its pod part):

- `ColdStart`: the simple model. A node with the image is always at hand; creation-to-Ready is one
  lognormal (median 48 s, p90 79 s, floor 20 s) or a fixed value (`ColdStart(fixed_s=90)`). The
  figures: vLLM start-up on H100 NVL measured 47.6 s for Llama-2-7B and 79.2 s for Qwen-14B with
  weights on SSD, 20.5-31 s with weights in page cache (vllm_startup_profiler_mlsys26.csv, case1 /
  case0); Alibaba's production model loads have p50 22.7 s / p90 42 s
  (alibaba_gentd26_load_latency_summary.csv, basemodel_update_latency_anon).
- `NodeColdStart`: Time-to-Ready as stages. A pod that finds a free node of its class (one a
  scale-in freed, still waiting for consolidation: sim/nodes.py) pays only what every start pays:
  weight load into the GPU and server start. A pod that finds none waits for a new node:
  provisioning, image pull and (for weights kept in object storage) the weight download, then the
  same load and server start. Each stage is drawn from its own distribution (`Stage`), sources below.

`COLD_SETTINGS` names the three settings the benchmark compares ("warm", "typical", "large"); each
setting's median creation-to-Ready from a fresh node comes out at about 1, 5 and 10 minutes
(`NodeColdStart.quantile`, checked by tests/unit/test_coldstart_stages.py by sampling).

Files cited as `*.csv` are in ../shared/traces/coldstart/, the calibration in
../shared/calibration/h200-transformers-llama1b.json (figures only, nothing copied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Z90 = 1.2815515655446004  # standard normal quantile at 0.9


@dataclass(frozen=True, slots=True)
class Stage:
    """Seconds one stage takes: lognormal with the given median and p90, floored at floor_s; with
    p90_s None it always takes median_s (no random draw), and Stage() takes no time."""

    median_s: float = 0.0
    p90_s: float | None = None
    floor_s: float = 0.0
    # The lognormal's (mu, sigma), computed once (a start draws three stages): None without a draw.
    _params: tuple[float, float] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.p90_s is not None and self.median_s > 0:
            mu = math.log(self.median_s)
            object.__setattr__(self, "_params", (mu, math.log(self.p90_s / self.median_s) / Z90))

    def sample(self, rng: np.random.Generator) -> float:
        params = self._params
        if params is None:
            return self.median_s
        return max(self.floor_s, float(rng.lognormal(*params)))

    def sample_many(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self._params is None:
            return np.full(n, self.median_s)
        return np.maximum(self.floor_s, rng.lognormal(*self._params, n))


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Creation-to-Ready seconds: lognormal(median, p90) with a floor, or a fixed value. Nodes and
    the image are taken as present: no node stage, and a node a scale-in frees goes at once
    (consolidate_after_s 0), so billing is the pods' (what the benchmark used before the node model)."""

    median_s: float = 48.0
    p90_s: float = 79.0
    floor_s: float = 20.0
    fixed_s: float | None = None
    consolidate_after_s: float = 0.0  # how long a node freed by scale-in stays (billed) for the next start

    def sample(self, rng: np.random.Generator) -> float:
        """Creation-to-Ready of a start from a fresh node (here: any start)."""
        if self.fixed_s is not None:
            return self.fixed_s
        sigma = math.log(self.p90_s / self.median_s) / Z90
        return max(self.floor_s, float(rng.lognormal(math.log(self.median_s), sigma)))

    def node_s(self, rng: np.random.Generator) -> float:
        """Seconds a new node needs before a pod on it can start loading (provisioning, image
        pull, weight download): what a start on a free node skips. None here."""
        return 0.0

    def pod_s(self, rng: np.random.Generator) -> float:
        """Seconds every start takes once its node is up and holds the image (and weights)."""
        return self.sample(rng)

    @property
    def p90(self) -> float:
        return self.fixed_s if self.fixed_s is not None else self.p90_s


@dataclass(frozen=True, slots=True)
class NodeColdStart(ColdStart):
    """Time-to-Ready as stages, the node included.

    A start on a new node: provision + pull + fetch (the node part, cached on the node once done)
    then kube + load + server (the pod part). A start on a free node of its class: the pod
    part only, after whatever of the node part that node has not finished yet. The lognormal
    fields inherited from ColdStart are not used.
    """

    name: str = ""
    provision: Stage = Stage()  # node provisioning: only when no free node of the class exists
    pull: Stage = Stage()  # container image pull: a node that pulled it keeps it
    fetch: Stage = Stage()  # weight download from object storage to the node's disk (node-local cache)
    load: Stage = Stage()  # weights from the node's disk into GPU memory: every start
    server: Stage = Stage()  # engine start-up and warm-up until the model reports ready: every start
    kube: Stage = Stage()  # Kubernetes' part: scheduling, container start, readiness probe (every start)
    consolidate_after_s: float = 60.0

    def node_s(self, rng: np.random.Generator) -> float:
        return self.provision.sample(rng) + self.pull.sample(rng) + self.fetch.sample(rng)

    def pod_s(self, rng: np.random.Generator) -> float:
        return self.load.sample(rng) + self.server.sample(rng) + self.kube.sample(rng)

    def sample(self, rng: np.random.Generator) -> float:
        """Creation-to-Ready of a start that needs a new node."""
        return self.node_s(rng) + self.pod_s(rng)

    def sample_many(self, rng: np.random.Generator, n: int, *, fresh: bool = True) -> np.ndarray:
        """n creation-to-Ready draws: from a fresh node, or (fresh False) on a free node whose
        image (and weights) are cached."""
        stages = (self.provision, self.pull, self.fetch) if fresh else ()
        total = np.zeros(n)
        for s in (*stages, self.load, self.server, self.kube):
            total += s.sample_many(rng, n)
        return total

    def quantile(self, q: float, *, fresh: bool = True, n: int = 20000, seed: int = 0) -> float:
        """A quantile of creation-to-Ready, by sampling the stages (deterministic for a seed)."""
        return float(np.quantile(self.sample_many(np.random.default_rng(seed), n, fresh=fresh), q))

    @property
    def p90(self) -> float:
        return self.quantile(0.9)

    def stage_medians(self) -> dict[str, float]:
        """Each stage's median seconds (what makes a setting's figure)."""
        return {k: getattr(self, k).median_s for k in ("provision", "pull", "fetch", "load", "server", "kube")}


# ---------------------------------------------------------------------------------------------
# Stages and their sources.

# Node provisioning (a new node): Karpenter creates a NodeClaim for the pending pod; the instance is
# launched, registers as a Node and is initialized (karpenter.sh/docs/concepts/nodeclaims: launch,
# registration, initialization); a GPU node is initialized once the NVIDIA device plugin advertises
# nvidia.com/gpu. Issue 16's Karpenter-like 60-120 s taken as p10-p90: median sqrt(60 x 120) = 85 s,
# p90 120 s; floor 40 s (no instance boots and joins faster). Billed from the start: the instance
# runs from its launch.
PROVISION = Stage(85.0, 120.0, floor_s=40.0)

# Image pull (a new node; a node that pulled the image keeps it in its containerd store): a
# Triton + TensorRT-LLM image is 16-18.5 GB (nvcr.io/nvidia/tritonserver:24.04-trtllm-python-py3
# 18.46 GB, triton-inference-server/tensorrtllm_backend#489; 25.09 16.24 GB, NVIDIA/TensorRT-LLM#8270).
# Median 150 s (123 MB/s pulled and unpacked, registry in the region), p90 240 s; the unoptimised
# figure of literature_coldstart_figures.csv (BentoML: a 20.2 GB LLM image, pull 5-6 min + layer
# extraction 3-4 min) is the slow tail beyond p99; floor 60 s.
PULL_TRTLLM = Stage(150.0, 240.0, floor_s=60.0)

# Weight load into the GPU, 8B-class model (16 GB bf16) from the node's disk or the image, page
# cache cold: vllm_startup_profiler_mlsys26.csv, figure-13/case1, llama2-7b load_weights_s 24.774
# (H100 NVL, weights on SSD, page cache dropped) -> median 25 s; spread of Alibaba's production
# model loads, p90/p50 = 42.0/22.7 (alibaba_gentd26_load_latency_summary.csv,
# basemodel_update_latency_anon) -> p90 46 s; floor 16 GB / 1.9 GB/s = 8.4 s (calibration
# load_cold_GBps, safetensors straight to the GPU).
LOAD_8B = Stage(25.0, 46.0, floor_s=8.4)

# Server start (framework start-up, engine init, KV-cache sizing, CUDA graphs, warm-up):
# vllm_startup_profiler_mlsys26.csv, figure-13/case1, actual_total_s - load_weights_s: llama2-7b
# 47.573 - 24.774 = 22.8 s -> median 23 s; yi-9b 61.347 - 32.416 = 28.9 s, the largest of the 11
# models -> p90 29 s; qwen-0.5b 22.154 - 1.710 = 20.4 s -> floor 20 s.
SERVER = Stage(23.0, 29.0, floor_s=20.0)

# Kubernetes' own part of every start: scheduling, sandbox and container start (the SIG Scalability
# SLO, kubernetes/community sig-scalability/slos/pod_startup_latency.md: p99 <= 5 s for stateless
# pods, image pull excluded) plus the readiness probe seeing the model ready (the operator's
# default readinessProbe on Triton's /v2/models/<model>/ready has periodSeconds 5,
# adapters/manifests.py: 2.5 s on average): median 2.5 + 2.5 = 5 s, p90 8 s, floor 1 s.
KUBE = Stage(5.0, 8.0, floor_s=1.0)

# Large model kept in object storage (70B-class, ~140 GB bf16, one node of several GPUs):
# - download to the node's NVMe (kept there: a node-local model cache, so a reused node skips it):
#   literature_coldstart_figures.csv, Anyscale: Llama-2-70B download + init from S3 4 min 25 s on
#   AWS p4de before optimisation -> median 240 s (265 s less ~25 s of init, counted in SERVER),
#   p90 360 s (assumption: x1.5 for object-storage throughput); floor 28 s (130 GB at 5 GB/s,
#   ServerlessLLM's remote-storage assumption, same file);
# - load into the GPUs: literature_coldstart_figures.csv, ServerlessLLM OSDI'24: LLaMA-2-70B 84 s
#   with existing loaders -> median 84 s, p90 155 s (Alibaba's p90/p50 spread 1.85, as LOAD_8B),
#   floor 20 s (ServerlessLLM Store's fast loader class: Qwen3-32B 3.2 s random, x ~2 for 70B, x3).
FETCH_70B = Stage(240.0, 360.0, floor_s=28.0)
LOAD_70B = Stage(84.0, 155.0, floor_s=20.0)

# Karpenter consolidation: a node the scale-in left empty is removed after consolidateAfter
# (consolidationPolicy WhenEmpty or WhenEmptyOrUnderutilized: an empty node qualifies; the v1
# NodePool reference, karpenter.sh/docs/concepts/nodepools, sets consolidateAfter: 1m, the field
# has no default in v1). Until then it is billed (the instance runs) and the next start of its
# class takes it (image and weights cached).
CONSOLIDATE_AFTER_S = 60.0

COLD_SETTINGS: dict[str, NodeColdStart] = {
    # Warm nodes: GPU nodes kept up by the cluster (placeholder pods / a warm node pool), image
    # pre-pulled: no provisioning, no pull. Ready = load + server start + Kubernetes' part: 25 + 23 + 5 s (medians), ~1 min. The
    # node goes back to the cluster's warm pool when the pod leaves: not billed to the fleet.
    "warm": NodeColdStart(name="warm", load=LOAD_8B, server=SERVER, kube=KUBE, consolidate_after_s=0.0),
    # Typical: Karpenter provisions a node per start that finds none free, pulls the Triton
    # TensorRT-LLM image, loads the 8B model: 85 + 150 + 25 + 23 + 5 s (medians), ~5 min.
    "typical": NodeColdStart(name="typical", provision=PROVISION, pull=PULL_TRTLLM, load=LOAD_8B, server=SERVER,
                             kube=KUBE, consolidate_after_s=CONSOLIDATE_AFTER_S),
    # Large model from object storage: the same node and image, then a 70B-class download and load:
    # 85 + 150 + 240 + 84 + 23 + 5 s (medians), ~10 min.
    "large": NodeColdStart(name="large", provision=PROVISION, pull=PULL_TRTLLM, fetch=FETCH_70B, load=LOAD_70B,
                           server=SERVER, kube=KUBE, consolidate_after_s=CONSOLIDATE_AFTER_S),
}
