"""A small, fixed workload for Nsight Compute (see benchmarks/README.md, "Profiling the CUDA kernels").

    ncu ... python -m benchmarks._profile_target --op vsl_loss --n 4096 --pass forward+backward

Runs ``--warmup`` untimed calls, then ``--repeats`` calls between ``cudaProfilerStart/Stop`` so that
``ncu --profile-from-start off`` sees only the measured launches.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks import _cases


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks._profile_target")
    ap.add_argument("--op", choices=("sigmoid_rank", "vsl_loss"), default="vsl_loss")
    ap.add_argument("--variant", choices=("row", "public-code"), default="row")
    ap.add_argument("--algorithm", choices=("auto", "dense", "sorted"), default="auto")
    ap.add_argument("--pass", dest="pas", choices=_cases.PASSES, default="forward+backward")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)

    case = {"op": args.op, "impl": "vsl_ext", "variant": args.variant if args.op == "vsl_loss" else None,
            "algorithm": args.algorithm, "pass": args.pas, "n": args.n, "device": args.device}
    call = _cases.make_call(case, _cases.make_inputs(args.n, args.device))
    cuda = args.device == "cuda"
    for _ in range(args.warmup):
        call()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
    for _ in range(args.repeats):
        call()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()
    print(f"profiled {args.repeats} call(s) of {_cases.case_id(dict(case, section='profile'))}")


if __name__ == "__main__":
    main()
