"""Run the benchmarks, each in its own process, then write their figures into BENCHMARKS.md.

    python -m bench.run                 # B1-B5, B2b, B7, B8 here (about 3 hours on 2 cores)
    python -m bench.run --smoke         # every benchmark on tiny sizes (what `make test` runs)
    python -m bench.run --only b1,b3    # some of them
    python -m bench.run --gpu           # the GPU tier instead (bench/gpu.py; `make bench-gpu`):
                                        # under 8 minutes on one GPU, on KERAS_BACKEND
    python -m bench.run --gpu --smoke   # the GPU tier on tiny sizes (any backend, CPU too)

Results are JSON files in bench/results/ (LRSEARCH_BENCH_RESULTS moves them); BENCHMARKS.md is
only rewritten by full runs of the CPU tier. The GPU tier writes its table to gpu.md there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench import gpu, report
from bench.common import QUIET, RESULTS
from bench.gpu import GPU_BENCHMARKS

BENCHMARKS = ("b1_overhead", "b2_search_efficiency", "b2b_generated_problem", "b3_range_test",
              "b4_api_latency", "b5_scaling", "b7_preview_cost", "b8_schedule_matters")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated, e.g. b1,b3")
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU tier (gpu_b1, gpu_b3, gpu_b5) instead of the CPU tier")
    args = parser.parse_args()
    names: tuple[str, ...] = GPU_BENCHMARKS if args.gpu else BENCHMARKS
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        names = tuple(n for n in names
                      if n.removeprefix("gpu_").split("_")[0] in wanted)
    failed = []
    for name in names:
        start = time.monotonic()
        cmd = [sys.executable, "-m", f"bench.{name}"] + (["--smoke"] if args.smoke else [])
        print(f"== {name}", flush=True)
        code = subprocess.run(cmd, env={**os.environ, **QUIET}).returncode
        print(f"== {name}: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if args.gpu:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "gpu.md").write_text(gpu.summary(RESULTS))
        print(gpu.summary(RESULTS))
    elif not args.smoke and not failed:
        report.write(RESULTS)
        print("BENCHMARKS.md updated")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
