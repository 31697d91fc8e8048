"""``vsl-time-kernels`` (formerly ``vsl-demo``): fused kernels vs the PyTorch reference on random batches.

Prints, per device and batch size n, the forward+backward time of :func:`vsl_ext.vsl_loss` and of
:func:`vsl_ext.reference.public_code_vsl_loss` (only where its n^3 tensors fit) and their loss
difference. ``python -m vsl_ext.harness.time_kernels --sizes 128 512 2048``.
"""
from __future__ import annotations

import argparse
import time

import torch

from .. import build_info, reference, vsl_loss

# The reference holds about this many n^3 float32 tensors at its peak (forward + autograd saves).
_REFERENCE_CUBES = 6


def training_like_batch(n: int, device: str, seed: int = 0, dim: int = 256):
    """S: cosine similarities of matched random embeddings; C: a symmetric, heavily tied matrix."""
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img + 0.8 * torch.randn(n, dim, generator=g) / dim**0.5, dim=1)
    c = torch.rand(n, n, generator=g)
    c = (((c + c.t()) / 2) * 10).round() / 10
    return (img @ txt.t()).to(device), c.to(device)


def _time(fn, device: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def _reference_fits(n: int, device: str) -> bool:
    need = _REFERENCE_CUBES * 4 * n**3
    if device == "cuda":
        return need < torch.cuda.mem_get_info()[0] * 0.8
    return n <= 512  # larger CPU references take minutes


def run(sizes, devices) -> list:
    rows = []
    for device in devices:
        for n in sizes:
            s, c = training_like_batch(n, device)

            def ours(s=s, c=c):  # this iteration's batch
                x = s.detach().requires_grad_()
                vsl_loss(x, c, variant="public-code").backward()

            def ref(s=s, c=c):
                x = s.detach().requires_grad_()
                reference.public_code_vsl_loss(x, c).backward()

            t_ours = _time(ours, device)
            loss = vsl_loss(s, c, variant="public-code").item()
            t_ref = diff = None
            if _reference_fits(n, device):
                t_ref = _time(ref, device, repeats=1)
                diff = abs(reference.public_code_vsl_loss(s, c).item() - loss)
            rows.append(dict(device=device, n=n, ours_s=t_ours, reference_s=t_ref, loss=loss, abs_diff=diff))
            speedup = f"{t_ref / t_ours:8.1f}x" if t_ref else "  (reference does not fit)"
            ref_txt = f"{t_ref * 1e3:10.1f}" if t_ref else "         -"
            print(f"{device:5s} n={n:6d}  ours {t_ours * 1e3:9.2f} ms  reference {ref_txt} ms  {speedup}"
                  f"  loss {loss:.6f}" + (f"  |diff| {diff:.1e}" if diff is not None else ""), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="vsl-time-kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default, one "
                        "per core, which is what the kernels are timed with; on a shared machine 1 may be faster)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    info = build_info()
    print(f"vsl_ext {info['version']}  cuda kernels: {info['cuda']}  cpu: {info['cpu_isa']}, "
          f"{torch.get_num_threads()} threads  (forward+backward, public-code variant, best of 3)")
    run(args.sizes, devices)


if __name__ == "__main__":
    main()
