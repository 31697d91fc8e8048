// Thin pybind11 layer: tensors arrive as (data pointer, shape) after validation in Python, so the
// module never links libtorch and builds without torch installed.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"

namespace py = pybind11;
using vsl::DType;
using vsl::RankArgs;

namespace {

DType parse_dtype(const std::string& s) {
  if (s == "float32") return DType::f32;
  if (s == "float64") return DType::f64;
  throw std::invalid_argument("vsl_ext native kernels take float32 or float64, got " + s);
}

RankArgs make_args(double tau, bool descending, double clamp_at, int algo, int threads) {
  if (!(tau > 0)) throw std::invalid_argument("tau must be > 0");
  if (algo < 0 || algo > 2) throw std::invalid_argument("algo must be 0 (auto), 1 (dense) or 2 (sorted)");
  RankArgs a;
  a.tau = tau;
  a.descending = descending;
  a.clamp_at = clamp_at;
  a.algo = static_cast<vsl::RankAlgo>(algo);
  a.threads = threads;
  return a;
}

void check_window(int kind, double tau) {
  if (kind < 0 || kind > 3) throw std::invalid_argument("window kind must be 0..3");
  if (!(tau > 0)) throw std::invalid_argument("tau must be > 0");
}

const int64_t* i64(uintptr_t p) { return reinterpret_cast<const int64_t*>(p); }

template <typename P> const void* cptr(P p) { return reinterpret_cast<const void*>(p); }
template <typename P> void* ptr(P p) { return reinterpret_cast<void*>(p); }

std::vector<std::string> split_archs(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

namespace vsl {
bool cuda_compiled() { return VSL_WITH_CUDA != 0; }
#if !VSL_WITH_CUDA
CudaStatus cuda_status() { return {}; }
#endif
}  // namespace vsl

// Each kernel family beside this one registers its functions here (csrc/<family>.cpp).
void register_caption_index(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "vsl_ext native kernels (pointer-level; use the vsl_ext Python API)";
  const auto no_gil = py::call_guard<py::gil_scoped_release>();

  m.def(
      "rank_forward_cpu",
      [](const std::string& dt, uintptr_t x, uintptr_t y, uintptr_t out, int64_t rows, int64_t cols, double tau,
         bool desc, double clamp_at, int algo, int threads) {
        vsl::rank_forward_cpu(parse_dtype(dt), cptr(x), cptr(y), ptr(out), rows, cols,
                              make_args(tau, desc, clamp_at, algo, threads));
      },
      no_gil);
  m.def(
      "rank_backward_cpu",
      [](const std::string& dt, uintptr_t x, uintptr_t y, uintptr_t g, uintptr_t gx, uintptr_t gy, int64_t rows,
         int64_t cols, double tau, bool desc, double clamp_at, int algo, int threads) {
        vsl::rank_backward_cpu(parse_dtype(dt), cptr(x), cptr(y), cptr(g), ptr(gx), ptr(gy), rows, cols,
                               make_args(tau, desc, clamp_at, algo, threads));
      },
      no_gil);
  m.def(
      "vsl_forward_cpu",
      [](const std::string& dt, uintptr_t sx, uintptr_t sy, uintptr_t cx, uintptr_t cy, uintptr_t gs, uintptr_t gc,
         uintptr_t partials, int64_t rows, int64_t cols, double grad_scale, double tau, double clamp_at, int algo,
         int threads) {
        vsl::vsl_forward_cpu(parse_dtype(dt), cptr(sx), cptr(sy), cptr(cx), cptr(cy), ptr(gs), ptr(gc),
                             static_cast<double*>(ptr(partials)), rows, cols, grad_scale,
                             make_args(tau, true, clamp_at, algo, threads));
      },
      no_gil);

  m.def(
      "window_sums_cpu",
      [](const std::string& dt, int kind, uintptr_t v, uintptr_t w, uintptr_t u, uintptr_t wu, uintptr_t uperm,
         uintptr_t skip, uintptr_t out, int64_t rows, int64_t cols, double tau, bool desc, int threads) {
        check_window(kind, tau);
        vsl::window_sums_cpu(parse_dtype(dt), kind, cptr(v), cptr(w), cptr(u), cptr(wu), i64(uperm), i64(skip),
                             ptr(out), rows, cols, tau, desc, threads);
      },
      no_gil);
  m.def(
      "rank_ratio_rows_cpu",
      [](const std::string& dt, uintptr_t sr, uintptr_t cr, uintptr_t gs, uintptr_t gc, uintptr_t partials,
         int64_t rows, int64_t cols, double grad_scale) {
        vsl::rank_ratio_rows_cpu(parse_dtype(dt), cptr(sr), cptr(cr), ptr(gs), ptr(gc),
                                 static_cast<double*>(ptr(partials)), rows, cols, grad_scale);
      },
      no_gil);

#if VSL_WITH_CUDA
  m.def(
      "rank_forward_cuda",
      [](const std::string& dt, uintptr_t x, uintptr_t y, uintptr_t out, int64_t rows, int64_t cols, double tau,
         bool desc, double clamp_at, int algo, int device, uintptr_t stream) {
        vsl::rank_forward_cuda(parse_dtype(dt), cptr(x), cptr(y), ptr(out), rows, cols,
                               make_args(tau, desc, clamp_at, algo, 1), device, stream);
      },
      no_gil);
  m.def(
      "rank_backward_cuda",
      [](const std::string& dt, uintptr_t x, uintptr_t y, uintptr_t g, uintptr_t gx, uintptr_t gy, int64_t rows,
         int64_t cols, double tau, bool desc, double clamp_at, int algo, int device, uintptr_t stream) {
        vsl::rank_backward_cuda(parse_dtype(dt), cptr(x), cptr(y), cptr(g), ptr(gx), ptr(gy), rows, cols,
                                make_args(tau, desc, clamp_at, algo, 1), device, stream);
      },
      no_gil);
  m.def(
      "vsl_forward_cuda",
      [](const std::string& dt, uintptr_t sx, uintptr_t sy, uintptr_t cx, uintptr_t cy, uintptr_t gs, uintptr_t gc,
         uintptr_t partials, int64_t rows, int64_t cols, double grad_scale, double tau, double clamp_at, int algo,
         int device, uintptr_t stream) {
        vsl::vsl_forward_cuda(parse_dtype(dt), cptr(sx), cptr(sy), cptr(cx), cptr(cy), ptr(gs), ptr(gc),
                              static_cast<double*>(ptr(partials)), rows, cols, grad_scale,
                              make_args(tau, true, clamp_at, algo, 1), device, stream);
      },
      no_gil);
  m.def(
      "window_sums_cuda",
      [](const std::string& dt, int kind, uintptr_t v, uintptr_t w, uintptr_t u, uintptr_t wu, uintptr_t uperm,
         uintptr_t skip, uintptr_t out, int64_t rows, int64_t cols, double tau, bool desc, int device,
         uintptr_t stream) {
        check_window(kind, tau);
        vsl::window_sums_cuda(parse_dtype(dt), kind, cptr(v), cptr(w), cptr(u), cptr(wu), i64(uperm), i64(skip),
                              ptr(out), rows, cols, tau, desc, device, stream);
      },
      no_gil);
  m.def(
      "rank_ratio_rows_cuda",
      [](const std::string& dt, uintptr_t sr, uintptr_t cr, uintptr_t gs, uintptr_t gc, uintptr_t partials,
         int64_t rows, int64_t cols, double grad_scale, int device, uintptr_t stream) {
        vsl::rank_ratio_rows_cuda(parse_dtype(dt), cptr(sr), cptr(cr), ptr(gs), ptr(gc),
                                  static_cast<double*>(ptr(partials)), rows, cols, grad_scale, device, stream);
      },
      no_gil);
#endif

  m.def("build_info", []() {
    py::dict d;
    d["cuda"] = vsl::cuda_compiled();
    d["cuda_arch"] = vsl::cuda_compiled() ? split_archs(VSL_CUDA_ARCHS) : std::vector<std::string>{};
    d["openmp"] = VSL_WITH_OPENMP != 0;
    d["cpu_isa"] = std::string(vsl::cpu_isa());
#if defined(__VERSION__)
    d["compiler"] = std::string(__VERSION__);
#endif
    return d;
  });
  m.def("cuda_status", []() {
    const vsl::CudaStatus st = vsl::cuda_status();
    py::dict d;
    d["devices"] = st.devices;
    d["runtime_version"] = st.runtime_version;
    d["driver_version"] = st.driver_version;
    d["error"] = st.error;
    return d;
  });
  register_caption_index(m);
}
