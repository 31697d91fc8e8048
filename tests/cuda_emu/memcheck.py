"""The workload that :func:`cuda_emu.memcheck` runs under AddressSanitizer: every kernel family on
exactly sized buffers (``python -m cuda_emu.memcheck LIB [--faulty]``, with tests/ on the path)."""
import sys
from pathlib import Path

import numpy as np
import torch

from cuda_emu import Emulator


def _matrix(*shape, dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3e-3


def rank_and_vsl_kernels(emu: Emulator) -> None:
    for rows, cols in [(1, 1), (3, 2), (2, 257), (1, 1025), (2, 2100)]:
        for dtype in (torch.float32, torch.float64):
            f64 = dtype == torch.float64
            x, y, g = (_matrix(rows, cols, dtype=dtype, seed=k) for k in range(3))
            out, gx, gy = (torch.empty(rows, cols, dtype=dtype) for _ in range(3))
            row_sums = torch.empty(rows, dtype=torch.float64)
            for yp in (0, y.data_ptr()):
                emu.sigmoid_rank_forward_cuda(f64, x.data_ptr(), yp, out.data_ptr(), rows, cols, 1e-3, True, False)
                emu.sigmoid_rank_backward_cuda(f64, x.data_ptr(), yp, g.data_ptr(), gx.data_ptr(),
                                               yp and gy.data_ptr(), rows, cols, 1e-3, True, True)
                emu.vsl_loss_ratio_sum_cuda(f64, x.data_ptr(), yp, g.data_ptr(), yp, gx.data_ptr(), gy.data_ptr(),
                                            row_sums.data_ptr(), rows, cols, 1e-3, False)
            v = torch.sort(x, dim=1).values
            perm = torch.argsort(y, dim=1)
            skip = torch.randint(-1, cols, (rows, cols), generator=torch.Generator().manual_seed(4))
            for kind in range(4):
                for sk in (0, skip.data_ptr()):
                    emu.sigmoid_rank_sorted_sums_cuda(f64, kind, v.data_ptr(), g.data_ptr(), y.data_ptr(),
                                                      g.data_ptr(), perm.data_ptr(), sk, out.data_ptr(), rows, cols,
                                                      1e-3, True)
            sr, cr = 1 + x.abs() * 1e3, 1 + y.abs() * 1e3
            emu.vsl_loss_ratio_sum_from_ranks_cuda(f64, sr.data_ptr(), cr.data_ptr(), gx.data_ptr(), 0,
                                                   row_sums.data_ptr(), rows, cols)
            relevant = (x > 0).to(torch.uint8)
            weights = torch.ones(rows, dtype=torch.float64)
            for coef, grad in ((0, 0), (out.data_ptr(), gx.data_ptr())):
                emu.smooth_ap_loss_cuda(f64, x.data_ptr(), relevant.data_ptr(), weights.data_ptr(),
                                        row_sums.data_ptr(), coef, coef and gy.data_ptr(), grad, rows, cols, 1e-2)


def caption_kernels(emu: Emulator) -> None:
    from vsl_ext.caption_index import CaptionIndex

    groups = [["a man riding a horse", "a horse on a beach at dusk"], ["two dogs", "dogs in snow snow"], ["a cat"]]
    for mode in ("tfidf", "cider-d"):
        index = CaptionIndex.from_captions(groups * 20, mode=mode)
        a = index._a
        arr = {k: torch.from_numpy(np.array(a[k])) for k in ("cap_indptr", "cap_indices", "cap_data")}
        caps = torch.arange(index.num_captions, dtype=torch.int64)
        n = len(caps)
        longest = int((arr["cap_indptr"][1:] - arr["cap_indptr"][:-1]).max())
        for cap in (longest, 0):
            if mode == "tfidf":
                out = torch.empty(n, n)
                emu.caption_index_gram_cuda(*(arr[k].data_ptr() for k in ("cap_indptr", "cap_indices", "cap_data")),
                                            caps.data_ptr(), n, cap, out.data_ptr())
                continue
            inv = torch.from_numpy(np.array(index._inv_norm()))
            lens = torch.from_numpy(np.array(a["cap_len"]))
            ptr = torch.from_numpy(np.array(a["img_ptr"], dtype=np.int64))
            G = len(ptr) - 1
            out, scratch = torch.empty(G, G), torch.empty(n * n)
            emu.caption_index_cider_matrix_cuda(
                *(arr[k].data_ptr() for k in ("cap_indptr", "cap_indices", "cap_data")), inv.data_ptr(),
                lens.data_ptr(), [int(b) for b in index._bounds()], caps.data_ptr(), n, ptr.data_ptr(), G, False,
                float(index.sigma), cap, scratch.data_ptr(), out.data_ptr())


def main(argv) -> None:
    emu = Emulator(Path(argv[0]))
    if "--faulty" in argv[1:]:
        inp, out = _matrix(64), _matrix(64)
        emu.faulty("read_past_end", inp.data_ptr(), out.data_ptr(), 1)
    rank_and_vsl_kernels(emu)
    caption_kernels(emu)
    print("memcheck workload done")


if __name__ == "__main__":
    main(sys.argv[1:])
