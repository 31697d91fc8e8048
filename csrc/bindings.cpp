// Every Python-facing function and constant of vsl_ext._C (pybind11), besides the caption index's,
// which csrc/caption_index_cpu.cpp registers.
//
// PRIVATE: the kernel entry points take raw data pointers (integers) and trust them: a wrong
// pointer, shape, dtype or layout reads and writes out of bounds. They do not check their
// arguments, by design: every check sits one layer above, in the registered ops of vsl_ext/ops/
// (dtypes, layouts, shapes, devices, scalar ranges, in vsl_ext/ops/_checks.py), which are the only
// callers (through vsl_ext/kernels/). Call torch.ops.vsl_ext.* or the vsl_ext functions instead.
// The module never links libtorch, so it builds without torch installed.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "build_info.h"
#include "sigmoid_rank.h"
#include "vsl_constants.h"
#include "vsl_loss.h"

namespace py = pybind11;

namespace {

vsl::DType dtype(bool float64) { return float64 ? vsl::DType::f64 : vsl::DType::f32; }

vsl::RankArgs rank_args(double tau, bool descending, bool public_code_clamp, int algorithm, int threads) {
  vsl::RankArgs a;
  a.tau = tau;
  a.descending = descending;
  a.public_code_clamp = public_code_clamp;
  a.algorithm = static_cast<vsl::Algorithm>(algorithm);
  a.threads = threads;
  return a;
}

template <typename T = void> const T* in(uintptr_t p) { return reinterpret_cast<const T*>(p); }
template <typename T = void> T* out(uintptr_t p) { return reinterpret_cast<T*>(p); }

std::vector<std::string> split_archs(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) parts.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

constexpr const char* kPrivate =
    "PRIVATE, unchecked: raw data pointers of contiguous (rows, cols) matrices; a wrong argument reads or "
    "writes out of bounds. Called only by vsl_ext/kernels/ after the checks of the registered ops "
    "(torch.ops.vsl_ext.*, vsl_ext/ops/_checks.py). See csrc/";

std::string private_doc(const char* what, const char* header) {
  return std::string(what) + "\n\n" + kPrivate + header + ".";
}

void export_constants(py::module_& m) {
  py::dict algorithms;
  algorithms["auto"] = static_cast<int>(vsl::Algorithm::automatic);
  algorithms["dense"] = static_cast<int>(vsl::Algorithm::dense);
  algorithms["sorted"] = static_cast<int>(vsl::Algorithm::sorted);
  m.attr("ALGORITHMS") = algorithms;
  py::dict saturation;
  saturation["float32"] = static_cast<double>(vsl::Saturation<float>::value);
  saturation["float64"] = vsl::Saturation<double>::value;
  m.attr("SATURATION") = saturation;
  m.attr("PUBLIC_CODE_CLAMP") = vsl::kPublicCodeClamp;
  m.attr("CPU_SORTED_FROM_COLS") = vsl::kCpuSortedFromCols;
  m.attr("CUDA_SORTED_FROM_COLS") = vsl::kCudaSortedFromCols;
  m.attr("CUDA_SORTED_MAX_WINDOW_FRACTION") = vsl::kCudaSortedMaxWindowFraction;
  py::dict sums;
  sums["rank"] = static_cast<int>(vsl::SortedSum::rank);
  sums["row_rank_grad"] = static_cast<int>(vsl::SortedSum::row_rank_grad);
  sums["ranked_grad"] = static_cast<int>(vsl::SortedSum::ranked_grad);
  sums["compared_grad"] = static_cast<int>(vsl::SortedSum::compared_grad);
  m.attr("SORTED_SUMS") = sums;
}

}  // namespace

namespace vsl {
bool cuda_compiled() { return VSL_WITH_CUDA != 0; }
#if !VSL_WITH_CUDA
CudaStatus cuda_status() { return {}; }
#endif
}  // namespace vsl

void register_caption_index(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "vsl_ext's native kernels. PRIVATE: the kernel functions take raw data pointers and check nothing; "
      "use vsl_ext.sigmoid_rank / vsl_ext.vsl_loss or torch.ops.vsl_ext.*, whose registered ops check their "
      "inputs. The constants (ALGORITHMS, SATURATION, PUBLIC_CODE_CLAMP, CPU_SORTED_FROM_COLS, "
      "CUDA_SORTED_FROM_COLS, CUDA_SORTED_MAX_WINDOW_FRACTION, SORTED_SUMS) are defined once, in "
      "csrc/vsl_constants.h.";
  export_constants(m);
  const auto no_gil = py::call_guard<py::gil_scoped_release>();

  m.def(
      "sigmoid_rank_forward_cpu",
      [](bool float64, uintptr_t ranked, uintptr_t compared, uintptr_t ranks, int64_t rows, int64_t cols, double tau,
         bool descending, bool public_code_clamp, int algorithm, int threads) {
        vsl::sigmoid_rank_forward_cpu(dtype(float64), in(ranked), in(compared), out(ranks), rows, cols,
                                      rank_args(tau, descending, public_code_clamp, algorithm, threads));
      },
      py::arg("float64"), py::arg("ranked"), py::arg("compared"), py::arg("ranks"), py::arg("rows"), py::arg("cols"),
      py::arg("tau"), py::arg("descending"), py::arg("public_code_clamp"), py::arg("algorithm"), py::arg("threads"),
      private_doc("ranks = sigmoid rank of `ranked` against `compared` (0: its own rows).", "sigmoid_rank.h").c_str(),
      no_gil);
  m.def(
      "sigmoid_rank_backward_cpu",
      [](bool float64, uintptr_t ranked, uintptr_t compared, uintptr_t grad_ranks, uintptr_t grad_ranked,
         uintptr_t grad_compared, int64_t rows, int64_t cols, double tau, bool descending, bool public_code_clamp,
         int algorithm, int threads) {
        vsl::sigmoid_rank_backward_cpu(dtype(float64), in(ranked), in(compared), in(grad_ranks), out(grad_ranked),
                                       out(grad_compared), rows, cols,
                                       rank_args(tau, descending, public_code_clamp, algorithm, threads));
      },
      py::arg("float64"), py::arg("ranked"), py::arg("compared"), py::arg("grad_ranks"), py::arg("grad_ranked"),
      py::arg("grad_compared"), py::arg("rows"), py::arg("cols"), py::arg("tau"), py::arg("descending"),
      py::arg("public_code_clamp"), py::arg("algorithm"), py::arg("threads"),
      private_doc("Gradients of sum(grad_ranks * ranks) with respect to `ranked` (and `compared`).", "sigmoid_rank.h")
          .c_str(),
      no_gil);
  m.def(
      "vsl_loss_ratio_sum_cpu",
      [](bool float64, uintptr_t sims, uintptr_t sims_compared, uintptr_t semantic, uintptr_t semantic_compared,
         uintptr_t grad_sr, uintptr_t grad_cr, uintptr_t row_sums, int64_t rows, int64_t cols, double tau,
         bool public_code_clamp, int algorithm, int threads, uintptr_t grad_sims, uintptr_t grad_sims_compared,
         uintptr_t grad_semantic, uintptr_t grad_semantic_compared) {
        vsl::VslLossGrads grads;
        grads.grad_sr = out(grad_sr);
        grads.grad_cr = out(grad_cr);
        grads.grad_sims = out(grad_sims);
        grads.grad_sims_compared = out(grad_sims_compared);
        grads.grad_semantic = out(grad_semantic);
        grads.grad_semantic_compared = out(grad_semantic_compared);
        vsl::vsl_loss_ratio_sum_cpu(dtype(float64), in(sims), in(sims_compared), in(semantic), in(semantic_compared),
                                    grads, out<double>(row_sums), rows, cols,
                                    rank_args(tau, true, public_code_clamp, algorithm, threads));
      },
      py::arg("float64"), py::arg("sims"), py::arg("sims_compared"), py::arg("semantic"), py::arg("semantic_compared"),
      py::arg("grad_sr"), py::arg("grad_cr"), py::arg("row_sums"), py::arg("rows"), py::arg("cols"), py::arg("tau"),
      py::arg("public_code_clamp"), py::arg("algorithm"), py::arg("threads"), py::arg("grad_sims") = 0,
      py::arg("grad_sims_compared") = 0, py::arg("grad_semantic") = 0, py::arg("grad_semantic_compared") = 0,
      private_doc("Fused VSL rows: row_sums[i] = sum_j min(SR, CR) / max(SR, CR), its gradients with respect to SR "
                  "and CR, and (where given) to sims and semantic through the ranks (0: not computed).",
                  "vsl_loss.h")
          .c_str(),
      no_gil);

#if VSL_WITH_CUDA
  m.def(
      "sigmoid_rank_forward_cuda",
      [](bool float64, uintptr_t ranked, uintptr_t compared, uintptr_t ranks, int64_t rows, int64_t cols, double tau,
         bool descending, bool public_code_clamp, int device, uintptr_t stream) {
        vsl::sigmoid_rank_forward_cuda(dtype(float64), in(ranked), in(compared), out(ranks), rows, cols,
                                       rank_args(tau, descending, public_code_clamp, 1, 1), device, stream);
      },
      py::arg("float64"), py::arg("ranked"), py::arg("compared"), py::arg("ranks"), py::arg("rows"), py::arg("cols"),
      py::arg("tau"), py::arg("descending"), py::arg("public_code_clamp"), py::arg("device"), py::arg("stream"),
      private_doc("Dense sigmoid ranks on `device`, launched on `stream` (a cudaStream_t).", "sigmoid_rank.h").c_str(),
      no_gil);
  m.def(
      "sigmoid_rank_backward_cuda",
      [](bool float64, uintptr_t ranked, uintptr_t compared, uintptr_t grad_ranks, uintptr_t grad_ranked,
         uintptr_t grad_compared, int64_t rows, int64_t cols, double tau, bool descending, bool public_code_clamp,
         int device, uintptr_t stream) {
        vsl::sigmoid_rank_backward_cuda(dtype(float64), in(ranked), in(compared), in(grad_ranks), out(grad_ranked),
                                        out(grad_compared), rows, cols,
                                        rank_args(tau, descending, public_code_clamp, 1, 1), device, stream);
      },
      py::arg("float64"), py::arg("ranked"), py::arg("compared"), py::arg("grad_ranks"), py::arg("grad_ranked"),
      py::arg("grad_compared"), py::arg("rows"), py::arg("cols"), py::arg("tau"), py::arg("descending"),
      py::arg("public_code_clamp"), py::arg("device"), py::arg("stream"),
      private_doc("Dense sigmoid-rank gradients on `device`.", "sigmoid_rank.h").c_str(), no_gil);
  m.def(
      "sigmoid_rank_sorted_sums_cuda",
      [](bool float64, int kind, uintptr_t sorted_values, uintptr_t value_weights, uintptr_t sorted_centres,
         uintptr_t centre_weights, uintptr_t centre_columns, uintptr_t skip_positions, uintptr_t out_, int64_t rows,
         int64_t cols, double tau, bool descending, int device, uintptr_t stream) {
        vsl::sigmoid_rank_sorted_sums_cuda(dtype(float64), static_cast<vsl::SortedSum>(kind), in(sorted_values),
                                           in(value_weights), in(sorted_centres), in(centre_weights),
                                           in<int64_t>(centre_columns), in<int64_t>(skip_positions), out(out_), rows,
                                           cols, tau, descending, device, stream);
      },
      py::arg("float64"), py::arg("kind"), py::arg("sorted_values"), py::arg("value_weights"),
      py::arg("sorted_centres"), py::arg("centre_weights"), py::arg("centre_columns"), py::arg("skip_positions"),
      py::arg("out"), py::arg("rows"), py::arg("cols"), py::arg("tau"), py::arg("descending"), py::arg("device"),
      py::arg("stream"),
      private_doc("The sorted algorithm's sums (SORTED_SUMS) over rows sorted by torch.sort.", "sigmoid_rank.h")
          .c_str(),
      no_gil);
  m.def(
      "vsl_loss_ratio_sum_cuda",
      [](bool float64, uintptr_t sims, uintptr_t sims_compared, uintptr_t semantic, uintptr_t semantic_compared,
         uintptr_t grad_sr, uintptr_t grad_cr, uintptr_t row_sums, int64_t rows, int64_t cols, double tau,
         bool public_code_clamp, int device, uintptr_t stream) {
        vsl::vsl_loss_ratio_sum_cuda(dtype(float64), in(sims), in(sims_compared), in(semantic), in(semantic_compared),
                                     out(grad_sr), out(grad_cr), out<double>(row_sums), rows, cols,
                                     rank_args(tau, true, public_code_clamp, 1, 1), device, stream);
      },
      py::arg("float64"), py::arg("sims"), py::arg("sims_compared"), py::arg("semantic"), py::arg("semantic_compared"),
      py::arg("grad_sr"), py::arg("grad_cr"), py::arg("row_sums"), py::arg("rows"), py::arg("cols"), py::arg("tau"),
      py::arg("public_code_clamp"), py::arg("device"), py::arg("stream"),
      private_doc("Fused dense VSL rows on `device`.", "vsl_loss.h").c_str(), no_gil);
  m.def(
      "vsl_loss_ratio_sum_from_ranks_cuda",
      [](bool float64, uintptr_t sr, uintptr_t cr, uintptr_t grad_sr, uintptr_t grad_cr, uintptr_t row_sums,
         int64_t rows, int64_t cols, int device, uintptr_t stream) {
        vsl::vsl_loss_ratio_sum_from_ranks_cuda(dtype(float64), in(sr), in(cr), out(grad_sr), out(grad_cr),
                                                out<double>(row_sums), rows, cols, device, stream);
      },
      py::arg("float64"), py::arg("sr"), py::arg("cr"), py::arg("grad_sr"), py::arg("grad_cr"), py::arg("row_sums"),
      py::arg("rows"), py::arg("cols"), py::arg("device"), py::arg("stream"),
      private_doc("VSL row sums and gradients from ranks SR, CR on `device`.", "vsl_loss.h").c_str(), no_gil);
#endif

  m.def(
      "build_info",
      []() {
        py::dict d;
        d["cuda"] = vsl::cuda_compiled();
        d["cuda_arch"] = vsl::cuda_compiled() ? split_archs(VSL_CUDA_ARCHS) : std::vector<std::string>{};
        d["openmp"] = VSL_WITH_OPENMP != 0;
        d["cpu_isa"] = std::string(vsl::cpu_isa());
#if defined(__VERSION__)
        d["compiler"] = std::string(__VERSION__);
#endif
        return d;
      },
      "What the module was built with (vsl_ext.build_info() adds the CUDA runtime's view).");
  m.def(
      "cuda_status",
      []() {
        const vsl::CudaStatus st = vsl::cuda_status();
        py::dict d;
        d["devices"] = st.devices;
        d["runtime_version"] = st.runtime_version;
        d["driver_version"] = st.driver_version;
        d["error"] = st.error;
        return d;
      },
      "What the CUDA runtime the kernels were built with sees: devices, versions, error.");
  register_caption_index(m);
}
