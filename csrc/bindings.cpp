// Thin pybind11 layer: tensors arrive as (data pointer, shape) after validation in Python, so the
// module never links libtorch and builds without torch installed.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "caption_index.h"
#include "caption_index_cuda.h"
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

// =============================================================================================
// Caption index (vsl_ext/caption_index.py): numpy arrays to the plain C++ entry points of
// csrc/caption_index.h and csrc/caption_index_cuda.h and back, and the constants Python reads.
// Arrays are converted to C-contiguous arrays of the entry point's dtype (forcecast) while the GIL is
// held; the kernels then run without it.
namespace caption_index_binding {

namespace ci = vsl::caption_index;

template <typename T> using CArr = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T> ci::Span<T> span(const CArr<T>& a) { return {a.data(), static_cast<int64_t>(a.size())}; }

// A C-contiguous numpy array of exactly dtype T stored under `key` in the index dict; `keep` holds a
// reference to it for as long as the span is used (the kernel runs without the GIL).
template <typename T> ci::Span<T> field(const py::dict& d, const char* key, std::vector<py::object>& keep) {
  if (!d.contains(key)) throw std::invalid_argument(std::string("caption index has no array '") + key + "'");
  py::object o = d[key];
  if (!py::isinstance<py::array>(o))
    throw std::invalid_argument(std::string("caption index field '") + key + "' is not an array");
  py::array a = py::reinterpret_borrow<py::array>(o);
  if (!py::isinstance<py::array_t<T>>(a))
    throw std::invalid_argument(std::string("caption index array '") + key + "' has dtype " +
                                std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string("caption index array '") + key + "' is not contiguous");
  keep.push_back(a);
  return {static_cast<const T*>(a.data()), static_cast<int64_t>(a.size())};
}

// A numpy array that takes over v's buffer (no copy).
template <typename T> py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape = {}) {
  if (shape.empty()) shape = {static_cast<py::ssize_t>(v.size())};
  if (v.empty()) return py::array_t<T>(shape);
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, heap->data(), owner);
}

ci::Mode parse_mode(const std::string& mode) {
  if (mode == "tfidf") return ci::Mode::tfidf;
  if (mode == "cider-d") return ci::Mode::cider_d;
  throw std::invalid_argument("caption index: the native builder takes mode 'tfidf' or 'cider-d', got '" + mode + "'");
}

py::dict build(const CArr<uint8_t>& blob, const CArr<int64_t>& cap_off, const CArr<int64_t>& img_ptr, int nmin,
               int nmax, const std::string& mode_name, int threads) {
  const ci::Mode mode = parse_mode(mode_name);
  ci::BuiltIndex ix;
  {
    py::gil_scoped_release nogil;
    ix = ci::build(span(blob), span(cap_off), span(img_ptr), nmin, nmax, mode, threads);
  }
  py::dict out;
  out["child"] = to_numpy(std::move(ix.child));
  out["tok_blob"] = to_numpy(std::move(ix.tok_blob));
  out["tok_off"] = to_numpy(std::move(ix.tok_off));
  out["tok_slots"] = to_numpy(std::move(ix.tok_slots));
  out["feat_prefix"] = to_numpy(std::move(ix.feat_prefix));
  out["feat_last"] = to_numpy(std::move(ix.feat_last));
  out["order_ptr"] = to_numpy(std::move(ix.order_ptr));
  out["cap_indptr"] = to_numpy(std::move(ix.cap_indptr));
  out["cap_indices"] = to_numpy(std::move(ix.cap_indices));
  out["cap_tf"] = to_numpy(std::move(ix.cap_tf));
  out["cap_data"] = to_numpy(std::move(ix.cap_data));
  out["df"] = to_numpy(std::move(ix.df));
  out["idf"] = to_numpy(std::move(ix.idf));
  if (mode == ci::Mode::tfidf) {
    out["img_indptr"] = to_numpy(std::move(ix.img_indptr));
    out["img_indices"] = to_numpy(std::move(ix.img_indices));
    out["img_data"] = to_numpy(std::move(ix.img_data));
  } else {
    out["cap_norm"] = to_numpy(std::move(ix.cap_norm), {static_cast<py::ssize_t>(ix.num_captions),
                                                        static_cast<py::ssize_t>(ix.num_orders)});
    out["cap_len"] = to_numpy(std::move(ix.cap_len));
  }
  return out;
}

py::dict lookup_tables(const CArr<uint8_t>& tok_blob, const CArr<int64_t>& tok_off, const CArr<int32_t>& feat_prefix,
                       const CArr<int32_t>& feat_last, const CArr<int64_t>& order_ptr) {
  ci::LookupTables t;
  {
    py::gil_scoped_release nogil;
    t = ci::lookup_tables(span(tok_blob), span(tok_off), span(feat_prefix), span(feat_last), span(order_ptr));
  }
  py::dict out;
  out["tok_slots"] = to_numpy(std::move(t.tok_slots));
  out["child"] = to_numpy(std::move(t.child));
  return out;
}

py::array_t<double> cider_d(const py::dict& index, const CArr<uint8_t>& blob, const CArr<int64_t>& off,
                            const CArr<int64_t>& image_ids, double sigma, int threads) {
  std::vector<py::object> keep;
  ci::CiderIndex ix;
  ix.tok_blob = field<uint8_t>(index, "tok_blob", keep);
  ix.tok_off = field<int64_t>(index, "tok_off", keep);
  ix.order_ptr = field<int64_t>(index, "order_ptr", keep);
  ix.img_ptr = field<int64_t>(index, "img_ptr", keep);
  ix.cap_indptr = field<int64_t>(index, "cap_indptr", keep);
  ix.tok_slots = field<int32_t>(index, "tok_slots", keep);
  ix.child = field<int64_t>(index, "child", keep);
  ix.feat_last = field<int32_t>(index, "feat_last", keep);
  ix.cap_indices = field<int32_t>(index, "cap_indices", keep);
  ix.cap_tf = field<int32_t>(index, "cap_tf", keep);
  ix.cap_len = field<int32_t>(index, "cap_len", keep);
  ix.idf = field<double>(index, "idf", keep);
  ix.cap_norm = field<double>(index, "cap_norm", keep);
  std::vector<double> scores;
  {
    py::gil_scoped_release nogil;
    scores = ci::cider_d(ix, span(blob), span(off), span(image_ids), sigma, threads);
  }
  return to_numpy(std::move(scores));
}

void bind_caption_index(py::module_& m) {
  const auto no_gil = py::call_guard<py::gil_scoped_release>();
  m.attr("CAPTION_INDEX_MAX_ORDER") = ci::kMaxOrder;
  m.attr("CAPTION_INDEX_SMEM_ROW_CAP") = ci::kSmemRowCap;

  m.def("caption_index_build", &build, "The arrays of a new caption index (see csrc/caption_index.h)",
        py::arg("blob"), py::arg("cap_off"), py::arg("img_ptr"), py::arg("nmin"), py::arg("nmax"), py::arg("mode"),
        py::arg("threads"));
  m.def("caption_index_lookup_tables", &lookup_tables, py::arg("tok_blob"), py::arg("tok_off"),
        py::arg("feat_prefix"), py::arg("feat_last"), py::arg("order_ptr"));
  m.def("caption_index_cider_d", &cider_d, py::arg("index"), py::arg("blob"), py::arg("off"), py::arg("image_ids"),
        py::arg("sigma"), py::arg("threads"));
  // The batch kernels' spans point into the argument arrays, which live until the call returns.
  m.def(
      "caption_index_gram_cpu",
      [](const CArr<int64_t>& indptr, const CArr<int32_t>& indices, const CArr<float>& data, int64_t num_features,
         const CArr<int64_t>& rows, uintptr_t out, int threads) {
        py::gil_scoped_release nogil;
        ci::gram_cpu(span(indptr), span(indices), span(data), num_features, span(rows), reinterpret_cast<float*>(out),
                     threads);
      },
      py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("num_features"), py::arg("rows"), py::arg("out"),
      py::arg("threads"));
  m.def(
      "caption_index_cider_matrix_cpu",
      [](const CArr<int64_t>& indptr, const CArr<int32_t>& indices, const CArr<float>& data,
         const CArr<float>& inv_norm, const CArr<int32_t>& lens, const CArr<int64_t>& bounds, const CArr<int64_t>& caps,
         const CArr<int64_t>& gptr, double sigma, uintptr_t out, int threads) {
        py::gil_scoped_release nogil;
        ci::cider_matrix_cpu(span(indptr), span(indices), span(data), span(inv_norm), span(lens), span(bounds),
                             span(caps), span(gptr), sigma, reinterpret_cast<float*>(out), threads);
      },
      py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("inv_norm"), py::arg("lens"), py::arg("bounds"),
      py::arg("caps"), py::arg("gptr"), py::arg("sigma"), py::arg("out"), py::arg("threads"));
  m.def(
      "caption_index_split_whitespace",
      [](const CArr<uint8_t>& text) { return to_numpy(ci::split_whitespace(span(text))); },
      "(start, length) byte pairs of Python's str.split() over UTF-8 bytes (for tests)", py::arg("text"));
#if VSL_WITH_CUDA
  m.def(
      "caption_index_gram_cuda",
      [](uintptr_t indptr, uintptr_t indices, uintptr_t data, uintptr_t rows, int64_t B, int smem_cap, uintptr_t out,
         int device, uintptr_t stream) {
        ci::gram_cuda(reinterpret_cast<const int64_t*>(indptr), reinterpret_cast<const int32_t*>(indices),
                      reinterpret_cast<const float*>(data), reinterpret_cast<const int64_t*>(rows), B, smem_cap,
                      reinterpret_cast<float*>(out), device, stream);
      },
      no_gil);
  m.def(
      "caption_index_cider_matrix_cuda",
      [](uintptr_t indptr, uintptr_t indices, uintptr_t data, uintptr_t inv_norm, uintptr_t lens,
         const std::vector<int64_t>& bounds, uintptr_t caps, int64_t Pb, uintptr_t gptr, int64_t G, bool singleton,
         double sigma, int smem_cap, uintptr_t scratch, uintptr_t out, int device, uintptr_t stream) {
        ci::cider_matrix_cuda(reinterpret_cast<const int64_t*>(indptr), reinterpret_cast<const int32_t*>(indices),
                              reinterpret_cast<const float*>(data), reinterpret_cast<const float*>(inv_norm),
                              reinterpret_cast<const int32_t*>(lens), bounds, reinterpret_cast<const int64_t*>(caps),
                              Pb, reinterpret_cast<const int64_t*>(gptr), G, singleton, sigma, smem_cap,
                              reinterpret_cast<float*>(scratch), reinterpret_cast<float*>(out), device, stream);
      },
      no_gil);
#else
  (void)no_gil;
#endif
}

}  // namespace caption_index_binding
// ============================================================================================= end caption index

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
  caption_index_binding::bind_caption_index(m);
}
