"""`make chaos`: the chaos suite on a local real cluster of its own; writes reports/reliability.

    python -m tests.chaos --out reports/reliability [--rounds 10] [--prometheus-s 600] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpufleet.devenv.prometheus import PrometheusServer
from tests.chaos import report
from tests.chaos.harness import Chaos, Config
from tests.integration.support import Cluster, Process, free_port
from tests.support import ROOT

GPUS_PER_NODE = 32  # eight services at their peaks, their surges and the spot replacements fit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "reports/reliability")
    p.add_argument("--seed", type=int, default=None, help="repeats a run's fault schedule (default: random, printed)")
    p.add_argument("--rounds", type=int, default=10, help="kill -9 rounds (5 trials each)")
    p.add_argument("--prometheus-s", type=float, default=600, help="how long the Prometheus faults last")
    p.add_argument("--blackhole-s", type=float, default=90)
    p.add_argument("--api-restarts", type=int, default=2)
    p.add_argument("--etcd-restarts", type=int, default=2)
    p.add_argument("--cluster", default=os.environ.get("GPUFLEET_TEST_CLUSTER", "gpufleet-chaos"))
    p.add_argument("--keep-cluster", action="store_true")
    args = p.parse_args(argv)
    # SIGTERM (a stopped `make chaos`) ends the run through the finally below: cluster, processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"chaos: seed {seed}", flush=True)
    cfg = Config(seed=seed, kill_rounds=args.rounds, api_restarts=args.api_restarts, etcd_restarts=args.etcd_restarts,
                 blackhole_s=args.blackhole_s, prometheus_fault_s=args.prometheus_s, cluster_name=args.cluster,
                 gpus_per_node=GPUS_PER_NODE, extra_nodes=1)  # the rotating phase services' pods
    env = {**os.environ, "CLUSTER_NAME": args.cluster, "GPUS_PER_NODE": str(GPUS_PER_NODE)}
    began = time.time()
    subprocess.run([str(ROOT / "hack/cluster.sh"), "up"], env=env, check=True, timeout=3600)
    kubeconfig = subprocess.run([str(ROOT / "hack/cluster.sh"), "kubeconfig"], env=env, check=True, text=True,
                                capture_output=True).stdout.strip()
    cluster = Cluster(kubeconfig)
    work = Path(tempfile.mkdtemp(prefix="gpufleet-chaos-"))
    file_sd = work / "file_sd"
    prometheus = PrometheusServer(scrape_interval_s=1.0, file_sd_dir=file_sd).start()
    port = free_port()
    emulator = Process("emulator", [sys.executable, "-m", "gpufleet.emulator", "--kubeconfig", kubeconfig,
                                    "--port", str(port), "--file-sd", str(file_sd), "--tick", "0.5"],
                       work / "emulator.log", cluster.env)
    chaos: Chaos | None = None
    try:
        emulator.wait_log("serving per-pod metrics")
        def log(line: str) -> None:  # minutes since the start: where the suite's time goes
            print(f"[{(time.time() - began) / 60:5.1f} min] {line}", flush=True)

        chaos = Chaos(cluster, f"http://127.0.0.1:{port}", file_sd, prometheus.url, work, cfg, log=log)
        trials = chaos.run()
        command = shlex.join(["python", "-m", "tests.chaos", *(argv if argv is not None else sys.argv[1:])]) + \
            ("" if args.seed is not None else f" --seed {seed}")
        rows = report.write(args.out, trials, cfg, command=command, duration_s=time.time() - began,
                            machine=f"{os.cpu_count()} cores, {platform.machine()}",
                            loadavg=chaos.recorder.loadavg if chaos.recorder else None, skipped=chaos.skipped)
        print((args.out / "README.md").read_text())
        print(f"chaos: seed {seed}; wrote {args.out}; argv {shlex.join(sys.argv)}", flush=True)
        # A loss or a trial that never converged fails the run; time over budget is reported (README).
        return 0 if all(r.losses == 0 and r.converged == r.trials for r in rows) and not chaos.skipped else 1
    finally:
        if chaos is not None:
            chaos.close()
        emulator.stop()
        prometheus.stop()
        if not args.keep_cluster:
            subprocess.run([str(ROOT / "hack/cluster.sh"), "down"], env=env, timeout=300)


if __name__ == "__main__":
    sys.exit(main())
