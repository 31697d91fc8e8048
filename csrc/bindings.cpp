// Every Python-facing function and constant of vsl_ext._C (pybind11), the caption index's included.
//
// PRIVATE: the rank and VSL kernel entry points take raw data pointers (integers) and trust them: a wrong
// pointer, shape, dtype or layout reads and writes out of bounds. They do not check their
// arguments, by design: every check sits one layer above, in the registered ops of vsl_ext/ops/
// (dtypes, layouts, shapes, devices, scalar ranges, in vsl_ext/ops/_checks.py), which are the only
// callers (through vsl_ext/kernels/). Call torch.ops.vsl_ext.* or the vsl_ext functions instead.
// The module never links libtorch, so it builds without torch installed.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "build_info.h"
#include "caption_index.h"
#include "caption_index_cuda.h"
#include "sigmoid_rank.h"
#include "smooth_ap_loss.h"
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
    out["cap_norm"] = to_numpy(std::move(ix.cap_norm),
                               {static_cast<py::ssize_t>(ix.num_captions), static_cast<py::ssize_t>(ix.num_orders)});
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

  m.def("caption_index_build", &build, "The arrays of a new caption index (see csrc/caption_index.h)", py::arg("blob"),
        py::arg("cap_off"), py::arg("img_ptr"), py::arg("nmin"), py::arg("nmax"), py::arg("mode"), py::arg("threads"));
  m.def("caption_index_lookup_tables", &lookup_tables, py::arg("tok_blob"), py::arg("tok_off"), py::arg("feat_prefix"),
        py::arg("feat_last"), py::arg("order_ptr"));
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

  m.def(
      "smooth_ap_loss_cpu",
      [](bool float64, uintptr_t sims, uintptr_t relevant, uintptr_t weights, uintptr_t row_sums, uintptr_t grad_sims,
         int64_t rows, int64_t cols, double tau, int threads) {
        vsl::smooth_ap_loss_cpu(dtype(float64), in(sims), in<uint8_t>(relevant), in<double>(weights),
                                out<double>(row_sums), out(grad_sims), rows, cols, tau, threads);
      },
      py::arg("float64"), py::arg("sims"), py::arg("relevant"), py::arg("weights"), py::arg("row_sums"),
      py::arg("grad_sims"), py::arg("rows"), py::arg("cols"), py::arg("tau"), py::arg("threads"),
      private_doc("Fused Smooth-AP rows: row_sums[q] = weights[q] * sum_{j in P} R_P / R_all and, where grad_sims is "
                  "not 0, d (1 - sum(row_sums)) / d sims.",
                  "smooth_ap_loss.h")
          .c_str(),
      no_gil);

  m.def(
      "scale_cpu",
      [](bool float64, uintptr_t data, uintptr_t result, int64_t count, double factor, int threads) {
        vsl::scale_cpu(dtype(float64), in(data), out(result), count, factor, threads);
      },
      py::arg("float64"), py::arg("data"), py::arg("out"), py::arg("count"), py::arg("factor"), py::arg("threads"),
      private_doc("out[i] = data[i] * factor (float32: factor rounded to float32 first), on the package's pool.",
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
  m.def(
      "smooth_ap_loss_cuda",
      [](bool float64, uintptr_t sims, uintptr_t relevant, uintptr_t weights, uintptr_t row_sums, uintptr_t coef_pos,
         uintptr_t coef_neg, uintptr_t grad_sims, int64_t rows, int64_t cols, double tau, int device,
         uintptr_t stream) {
        vsl::smooth_ap_loss_cuda(dtype(float64), in(sims), in<uint8_t>(relevant), in<double>(weights),
                                 out<double>(row_sums), out(coef_pos), out(coef_neg), out(grad_sims), rows, cols, tau,
                                 device, stream);
      },
      py::arg("float64"), py::arg("sims"), py::arg("relevant"), py::arg("weights"), py::arg("row_sums"),
      py::arg("coef_pos"), py::arg("coef_neg"), py::arg("grad_sims"), py::arg("rows"), py::arg("cols"), py::arg("tau"),
      py::arg("device"), py::arg("stream"),
      private_doc("Fused Smooth-AP rows on `device`.", "smooth_ap_loss.h").c_str(), no_gil);
#endif

  m.def(
      "build_info",
      []() {
        py::dict d;
        d["cuda"] = vsl::cuda_compiled();
        d["cuda_arch"] = vsl::cuda_compiled() ? split_archs(VSL_CUDA_ARCHS) : std::vector<std::string>{};
        d["openmp"] = false;  // no OpenMP runtime: parallel loops run on the package's pool (cpu_parallel.h)
        d["cpu_isa"] = std::string(vsl::cpu_isa());
#if defined(VSL_SANITIZE)
        d["sanitize"] = true;  // VSL_EXT_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer
#else
        d["sanitize"] = false;
#endif
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
  caption_index_binding::bind_caption_index(m);
}
