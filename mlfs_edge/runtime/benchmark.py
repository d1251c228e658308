"""Engine-only measurements: what switching sub-network costs on a loaded engine, and the engine's
peak memory against its file size. (The side-by-side benchmark with the other runtimes is
``mlfs_edge.eval.bench_engine``, above this layer.)"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.runtime.engine import Engine


def switch_cost_us(engine: Engine, arch: ArchSpec, repeats: int = 300) -> dict[str, float]:
    """What changing sub-network costs on a loaded engine. Nothing is copied or reloaded, so the cost is
    bounded by a whole forward pass with the new config: a 1-token, 1-layer run alternating between two
    configs is timed next to the same run repeating one config."""
    ids = np.array([[101]], np.int64)
    mask = np.ones_like(ids)
    a = SubnetConfig((0,), (arch.num_heads,), (arch.intermediate,))
    b = SubnetConfig((0,), (arch.num_heads // 2,), (arch.intermediate // 2,))

    def timed(cfgs: list[SubnetConfig]) -> float:
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            engine.run(ids, mask, subnet=cfgs[i % 2])
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    for _ in range(20):
        engine.run(ids, mask, subnet=a)
    before = engine.workspace_bytes  # after the first run sized the buffers
    return {"run_after_switch_us": timed([a, b]), "run_same_config_us": timed([a, a]),
            "workspace_bytes_changed": engine.workspace_bytes - before}


_RSS_PROBE = """
import json, sys
def rss(field):
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))
import numpy as np
from mlfs_edge.runtime import Engine
base = rss('VmRSS:')
engine = Engine.load(sys.argv[1])
ids = np.random.default_rng(0).integers(1000, 2000, size=(1, int(sys.argv[2])), dtype=np.int64)
for _ in range(3):
    engine.run(ids, np.ones_like(ids))
print(json.dumps({"bare_rss": base, "peak_rss": rss('VmHWM:'), "file_size": engine.file_size,
                  "workspace_bytes": engine.workspace_bytes}))
"""


def peak_rss(path: Path, seq: int) -> dict[str, float]:
    """Peak RSS of a fresh interpreter that loads `path` and runs it, over the interpreter with numpy and
    the runtime imported (torch is not needed to run a packed model)."""
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path), str(seq)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    over = r["peak_rss"] - r["bare_rss"]
    return {**r, "rss_over_bare": over, "ratio_to_file": over / r["file_size"]}
