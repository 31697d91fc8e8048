// Sparse caption index (vsl_ext.CaptionIndex): n-gram vocabulary build with TF-IDF or CIDEr-D
// weights, CIDEr-D scoring of new captions, and the per-batch similarity kernels on CPU.
//
// Layout (all arrays owned by Python as numpy arrays, see vsl_ext/captions.py):
//   tokens     tok_blob (uint8, UTF-8) + tok_off (int64, V + 1); token id = unigram id
//   features   "internal" ids over n-gram orders 1..nmax, grouped by order: order_ptr[n] = number of
//              internal ids of order <= n. An n-gram (n >= 2) is (prefix (n-1)-gram id, last token):
//              feat_prefix / feat_last (int32). Output ("feature") ids are internal ids minus
//              order_ptr[nmin - 1], i.e. only orders nmin..nmax, still grouped by order.
//   captions   CSR cap_indptr (int64) / cap_indices (int32, sorted per row) / cap_tf (int32 counts) /
//              cap_data (float32: l2-normalised tf-idf, or CIDEr-D weights tf * idf)
//   lookups    rebuilt from the arrays above, never read from files: tok_slots (open-addressing hash
//              table of the tokens, int32 token id or -1) and child (int64): n-grams of each order are numbered in (prefix, last)
//              order, so child[id] .. child[id + 1] are the sorted extensions of n-gram id (a trie).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if VSL_WITH_OPENMP
#include <omp.h>
#endif

#include "caption_index_cuda.h"

namespace py = pybind11;

namespace vsl {
namespace caption {

namespace {

constexpr int kMaxOrder = 32;

// ---------------------------------------------------------------------------------------------
// Array access

template <typename T> struct Span {
  const T* p = nullptr;
  int64_t n = 0;
  const T& operator[](int64_t i) const { return p[i]; }
};

template <typename T> using CArr = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T> Span<T> span(const CArr<T>& a) { return {a.data(), static_cast<int64_t>(a.size())}; }

// A C-contiguous numpy array of exactly dtype T stored under `key` in the index dict.
template <typename T> Span<T> field(const py::dict& d, const char* key) {
  if (!d.contains(key)) throw std::invalid_argument(std::string("caption index has no array '") + key + "'");
  py::object o = d[key];
  if (!py::isinstance<py::array>(o)) throw std::invalid_argument(std::string("caption index field '") + key + "' is not an array");
  py::array a = py::reinterpret_borrow<py::array>(o);
  if (!py::isinstance<py::array_t<T>>(a))
    throw std::invalid_argument(std::string("caption index array '") + key + "' has dtype " +
                                std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string("caption index array '") + key + "' is not contiguous");
  return {static_cast<const T*>(a.data()), static_cast<int64_t>(a.size())};
}

template <typename T> py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape = {}) {
  if (shape.empty()) shape = {static_cast<py::ssize_t>(v.size())};
  if (v.empty()) return py::array_t<T>(shape);
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, heap->data(), owner);
}

template <typename F> void parallel_for(int64_t n, int threads, F&& body) {
#if VSL_WITH_OPENMP
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  if (nt > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#else
  (void)threads;
#endif
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Runs body(begin, end) over [0, n) in contiguous chunks, at most `threads` at a time.
template <typename F> void parallel_chunks(int64_t n, int threads, int64_t min_chunk, F&& body) {
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads * 4, n / std::max<int64_t>(1, min_chunk)));
  if (threads <= 1) chunks = 1;
  parallel_for(chunks, threads, [&](int64_t c) { body(n * c / chunks, n * (c + 1) / chunks); });
}

// Threads for a kernel of about `work` inner-loop steps: one per ~4M steps (a few ms), because a batch
// query is short and extra threads mostly wait (or spin against torch's own pool) on a busy machine.
inline int threads_for(int64_t work, int threads) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, work / 4000000)));
}

// ---------------------------------------------------------------------------------------------
// Tokenisation: Python's str.split() (split on runs of str.isspace() characters) over UTF-8.

inline bool is_py_space(uint32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  switch (c) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

// Byte classes: 0 ASCII non-space, 1 ASCII space, 2 starts (or continues) a multi-byte sequence.
struct ByteClass {
  uint8_t c[256];
  ByteClass() {
    for (int b = 0; b < 256; ++b) c[b] = b >= 0x80 ? 2 : (is_py_space(static_cast<uint32_t>(b)) ? 1 : 0);
  }
};
const ByteClass kByteClass;

// Byte length of the sequence at s[i] if it encodes a Python whitespace character, else 0.
// Bytes that do not start a well-formed sequence count as non-space (str.encode never makes them).
inline int multibyte_space(const uint8_t* s, int64_t n, int64_t i) {
  const uint8_t b = s[i];
  int need;
  uint32_t c;
  if ((b & 0xE0) == 0xC0) { need = 1; c = b & 0x1F; }
  else if ((b & 0xF0) == 0xE0) { need = 2; c = b & 0x0F; }
  else return 0;  // 4-byte sequences encode no whitespace
  if (i + need >= n) return 0;
  for (int k = 1; k <= need; ++k) {
    const uint8_t cb = s[i + k];
    if ((cb & 0xC0) != 0x80) return 0;
    c = (c << 6) | (cb & 0x3F);
  }
  return is_py_space(c) ? need + 1 : 0;
}

// Calls emit(start, length) for every whitespace-separated token of s[0, n).
template <typename F> void split_ws(const uint8_t* s, int64_t n, F&& emit) {
  const uint8_t* cls = kByteClass.c;
  int64_t i = 0;
  while (i < n) {
    while (i < n) {  // skip whitespace
      const uint8_t c = cls[s[i]];
      if (c == 1) { ++i; continue; }
      if (c == 0) break;
      const int len = multibyte_space(s, n, i);
      if (!len) break;
      i += len;
    }
    if (i >= n) break;
    const int64_t start = i;
    while (i < n) {  // token
      const uint8_t c = cls[s[i]];
      if (c == 0) { ++i; continue; }
      if (c == 1 || multibyte_space(s, n, i)) break;
      ++i;
    }
    emit(start, i - start);
  }
}

// ---------------------------------------------------------------------------------------------
// Hashing

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(const uint8_t* s, int64_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ static_cast<uint64_t>(n);
  for (; n >= 8; s += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, s, 8);
    h = mix64(h ^ w) * 0x9E3779B97F4A7C15ULL;
  }
  uint64_t w = 0;
  for (int64_t k = 0; k < n; ++k) w |= static_cast<uint64_t>(s[k]) << (8 * k);
  return mix64(h ^ w);
}

inline size_t table_size(int64_t count) {
  size_t s = 16;
  while (s < static_cast<size_t>(count) * 2 + 2) s <<= 1;
  return s;
}

// Token strings -> ids (growable while building).
struct TokenTable {
  std::vector<int32_t> slots;
  std::vector<uint64_t> hashes;
  std::vector<int64_t> off{0};
  std::vector<uint8_t> blob;

  explicit TokenTable(int64_t expect) : slots(table_size(expect), -1) {}

  int32_t count() const { return static_cast<int32_t>(hashes.size()); }

  int32_t intern(const uint8_t* s, int64_t n) {
    const uint64_t h = hash_bytes(s, n);
    size_t mask = slots.size() - 1, i = h & mask;
    while (true) {
      const int32_t id = slots[i];
      if (id < 0) break;
      if (hashes[id] == h && off[id + 1] - off[id] == n && std::memcmp(blob.data() + off[id], s, n) == 0) return id;
      i = (i + 1) & mask;
    }
    const int32_t id = count();
    if (id == INT32_MAX) throw std::length_error("caption index: more than 2^31 - 1 distinct tokens");
    hashes.push_back(h);
    blob.insert(blob.end(), s, s + n);
    off.push_back(static_cast<int64_t>(blob.size()));
    slots[i] = id;
    if (static_cast<size_t>(count()) * 2 + 2 > slots.size()) rehash(slots.size() * 2);
    return id;
  }

  void rehash(size_t size) {
    slots.assign(size, -1);
    const size_t mask = size - 1;
    for (int32_t id = 0; id < count(); ++id) {
      size_t i = hashes[id] & mask;
      while (slots[i] >= 0) i = (i + 1) & mask;
      slots[i] = id;
    }
  }
};

// Read-only token lookup over the persistent arrays.
inline int32_t tok_find(const int32_t* slots, size_t mask, const int64_t* off, const uint8_t* blob, const uint8_t* s,
                        int64_t n) {
  size_t i = hash_bytes(s, n) & mask;
  while (true) {
    const int32_t id = slots[i];
    if (id < 0) return -1;
    if (off[id + 1] - off[id] == n && std::memcmp(blob + off[id], s, n) == 0) return id;
    i = (i + 1) & mask;
  }
}

// N-grams of order n >= 2 are numbered in (prefix id, last token) order, so the children of every
// (n-1)-gram are a contiguous, sorted id range: child[id] .. child[id + 1] (a trie with sorted edges).
// child[id] = first id of the next order whose prefix is >= id (order_ptr[nmax] for the last order).

// child array (size Fi + 1) from feat_prefix, for ids grouped by order and sorted by prefix within one.
std::vector<int64_t> child_ptr(const int32_t* prefix, const int64_t* order_ptr, int nmax) {
  const int64_t Fi = order_ptr[nmax];
  std::vector<int64_t> child(Fi + 1, Fi);
  for (int n = 1; n < nmax; ++n) {
    int64_t j = order_ptr[n];
    for (int64_t id = order_ptr[n - 1]; id < order_ptr[n]; ++id) {
      while (j < order_ptr[n + 1] && prefix[j] < id) ++j;
      child[id] = j;
    }
  }
  return child;
}

// Id of the n-gram (prefix id, last token), or -1.
inline int32_t trie_find(const int64_t* child, const int32_t* last, int64_t prefix, int32_t tok) {
  int64_t lo = child[prefix], hi = child[prefix + 1];
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (last[mid] < tok) lo = mid + 1;
    else hi = mid;
  }
  return (lo < child[prefix + 1] && last[lo] == tok) ? static_cast<int32_t>(lo) : -1;
}

template <typename T> void small_sort(T* a, int64_t n) {
  if (n > 24) { std::sort(a, a + n); return; }
  for (int64_t i = 1; i < n; ++i) {
    const T x = a[i];
    int64_t j = i;
    while (j > 0 && a[j - 1] > x) { a[j] = a[j - 1]; --j; }
    a[j] = x;
  }
}

void check_offsets(const Span<int64_t>& off, int64_t total, const char* what) {
  if (off.n < 1 || off[0] != 0 || off[off.n - 1] != total)
    throw std::invalid_argument(std::string("caption index: bad offsets in ") + what);
  for (int64_t i = 1; i < off.n; ++i)
    if (off[i] < off[i - 1]) throw std::invalid_argument(std::string("caption index: decreasing offsets in ") + what);
}

// ---------------------------------------------------------------------------------------------
// Build

enum Mode { kTfidf = 0, kCider = 1 };

py::dict build(const CArr<uint8_t>& blob_a, const CArr<int64_t>& cap_off_a, const CArr<int64_t>& img_ptr_a, int nmin,
               int nmax, int mode, int threads) {
  const Span<uint8_t> blob = span(blob_a);
  const Span<int64_t> cap_off = span(cap_off_a), img_ptr = span(img_ptr_a);
  if (nmin < 1 || nmax < nmin || nmax > kMaxOrder)
    throw std::invalid_argument("caption index: ngram orders must satisfy 1 <= nmin <= nmax <= 32");
  if (mode != kTfidf && mode != kCider) throw std::invalid_argument("caption index: unknown mode");
  if (mode == kCider && nmin != 1) throw std::invalid_argument("caption index: cider-d needs nmin == 1");
  const int64_t P = cap_off.n - 1, I = img_ptr.n - 1;
  if (P < 1 || I < 1) throw std::invalid_argument("caption index: needs at least one image and caption");
  check_offsets(cap_off, blob.n, "caption byte offsets");
  check_offsets(img_ptr, P, "image caption offsets");
  for (int64_t i = 0; i < I; ++i)
    if (img_ptr[i + 1] == img_ptr[i]) throw std::invalid_argument("caption index: an image has no captions");

  const int nn = nmax - nmin + 1;
  TokenTable tt(std::max<int64_t>(1024, blob.n / 64));
  std::vector<int32_t> toks;
  std::vector<int64_t> tok_ptr(P + 1, 0);
  std::vector<int64_t> order_ptr(nmax + 1, 0);
  std::vector<int32_t> feat_prefix, feat_last;
  std::vector<int64_t> cap_indptr(P + 1, 0);
  std::vector<int32_t> cap_indices, cap_tf, df;
  std::vector<double> idf;
  std::vector<float> cap_data;
  std::vector<int64_t> img_indptr;
  std::vector<int32_t> img_indices;
  std::vector<float> img_data;
  std::vector<double> cap_norm;
  std::vector<int32_t> cap_len;
  int64_t F = 0;

  {
    py::gil_scoped_release nogil;
    // 1. tokens
    toks.resize(static_cast<size_t>(blob.n / 2 + P + 1));  // a token and its separator take >= 2 bytes
    int64_t T = 0;
    for (int64_t p = 0; p < P; ++p) {
      const uint8_t* s = blob.p + cap_off[p];
      split_ws(s, cap_off[p + 1] - cap_off[p], [&](int64_t st, int64_t len) { toks[T++] = tt.intern(s + st, len); });
      tok_ptr[p + 1] = T;
    }
    toks.resize(T);
    const int32_t V = tt.count();

    // 2. n-gram ids. Positions are kept sorted by the id of the n-gram starting there; order n + 1
    // refines order n by sorting each run of equal ids by the next token. So ids come out in (prefix,
    // last token) order (the trie layout), and walking a sorted order appends every caption's row
    // entries in ascending feature id with repeats adjacent: rows and document frequencies need no
    // hashing and no per-row sort.
    if (T >= static_cast<int64_t>(INT32_MAX)) throw std::length_error("caption index: more than 2^31 - 1 tokens");
    std::vector<int32_t> img_of(P);
    for (int64_t i = 0; i < I; ++i)
      for (int64_t p = img_ptr[i]; p < img_ptr[i + 1]; ++p) img_of[p] = static_cast<int32_t>(i);
    std::vector<int64_t> row_start(P + 1, 0);
    for (int64_t p = 0; p < P; ++p) {
      const int64_t L = tok_ptr[p + 1] - tok_ptr[p];
      int64_t c = 0;
      for (int n = nmin; n <= nmax; ++n) c += std::max<int64_t>(0, L - n + 1);
      row_start[p + 1] = row_start[p] + c;
    }
    std::vector<int32_t> row_f(static_cast<size_t>(row_start[P])), row_tf(static_cast<size_t>(row_start[P]));
    std::vector<int64_t> wcur(row_start.begin(), row_start.end() - 1);
    // One occurrence of an n-gram: where it starts, its caption, the df unit (caption for tfidf, image
    // for cider-d) and how many tokens of the caption remain from there. Carried along with the sorted
    // lists so that only toks[] is read at random.
    struct Occ {
      int32_t pos, cap, unit, rem;
    };
    std::vector<Occ> list(T), list2;
    std::vector<int32_t> ids(T), ids2;
    {  // order 1: counting sort of the positions by token
      std::vector<int64_t> cnt(static_cast<size_t>(V) + 1, 0);
      for (int64_t t = 0; t < T; ++t) ++cnt[toks[t] + 1];
      for (int32_t v = 0; v < V; ++v) cnt[v + 1] += cnt[v];
      for (int64_t p = 0; p < P; ++p) {
        const int32_t unit = mode == kTfidf ? static_cast<int32_t>(p) : img_of[p];
        for (int64_t t = tok_ptr[p]; t < tok_ptr[p + 1]; ++t) {
          const int64_t k = cnt[toks[t]]++;
          list[k] = Occ{static_cast<int32_t>(t), static_cast<int32_t>(p), unit,
                        static_cast<int32_t>(tok_ptr[p + 1] - t)};
          ids[k] = toks[t];
        }
      }
    }
    feat_prefix.assign(V, -1);
    feat_last.resize(V);
    for (int32_t v = 0; v < V; ++v) feat_last[v] = v;
    order_ptr[1] = V;
    // appends the occurrences of one order (sorted by id, then position) to the rows and df
    auto emit = [&](const std::vector<Occ>& lst, const std::vector<int32_t>& id, int64_t fbase) {
      int32_t prev_id = -1, last_unit = -1, last_cap = -1;
      int64_t last_w = -1;
      for (size_t k = 0; k < lst.size(); ++k) {
        const Occ& o = lst[k];
        if (id[k] != prev_id) {
          df.push_back(0);
          prev_id = id[k];
          last_unit = -1;
          last_cap = -1;
        }
        if (o.unit != last_unit) {
          last_unit = o.unit;
          ++df.back();
        }
        if (o.cap == last_cap) {  // repeats of a feature within a caption are adjacent
          ++row_tf[last_w];
        } else {
          last_w = wcur[o.cap]++;
          row_f[last_w] = static_cast<int32_t>(id[k] - fbase);
          row_tf[last_w] = 1;
          last_cap = o.cap;
        }
      }
    };
    df.reserve(static_cast<size_t>(V) * 8);
    if (nmin == 1) emit(list, ids, 0);
    std::vector<uint64_t> buf;
    for (int n = 2; n <= nmax; ++n) {
      list2.resize(list.size());
      ids2.resize(list.size());
      size_t m = 0;
      int64_t next = static_cast<int64_t>(feat_prefix.size());
      const size_t M = list.size();
      for (size_t k = 0; k < M;) {
        const int32_t g = ids[k];
        const size_t k0 = k;
        buf.clear();
        for (; k < M && ids[k] == g; ++k)
          if (list[k].rem >= n)
            buf.push_back((static_cast<uint64_t>(toks[list[k].pos + n - 1]) << 32) | static_cast<uint32_t>(k - k0));
        small_sort(buf.data(), static_cast<int64_t>(buf.size()));
        for (size_t j = 0; j < buf.size(); ++j) {
          const int32_t tok = static_cast<int32_t>(buf[j] >> 32);
          if (j == 0 || tok != static_cast<int32_t>(buf[j - 1] >> 32)) {
            if (next >= INT32_MAX) throw std::length_error("caption index: more than 2^31 - 1 n-grams");
            feat_prefix.push_back(g);
            feat_last.push_back(tok);
            ++next;
          }
          list2[m] = list[k0 + (buf[j] & 0xFFFFFFFFu)];
          ids2[m++] = static_cast<int32_t>(next - 1);
        }
      }
      list2.resize(m);
      ids2.resize(m);
      order_ptr[n] = next;
      list.swap(list2);
      ids.swap(ids2);
      if (n >= nmin) emit(list, ids, order_ptr[nmin - 1]);
    }
    std::vector<Occ>().swap(list);
    std::vector<Occ>().swap(list2);
    std::vector<int32_t>().swap(ids);
    std::vector<int32_t>().swap(ids2);
    const int64_t fbase = order_ptr[nmin - 1];
    F = order_ptr[nmax] - fbase;
    if (static_cast<int64_t>(df.size()) != F) throw std::logic_error("caption index: feature count mismatch");

    // 3. compact the rows
    for (int64_t p = 0; p < P; ++p) cap_indptr[p + 1] = cap_indptr[p] + (wcur[p] - row_start[p]);
    const int64_t nnz = cap_indptr[P];
    cap_indices.resize(nnz);
    cap_tf.resize(nnz);
    for (int64_t p = 0; p < P; ++p) {
      std::copy(row_f.begin() + row_start[p], row_f.begin() + wcur[p], cap_indices.begin() + cap_indptr[p]);
      std::copy(row_tf.begin() + row_start[p], row_tf.begin() + wcur[p], cap_tf.begin() + cap_indptr[p]);
    }
    std::vector<int32_t>().swap(row_f);
    std::vector<int32_t>().swap(row_tf);

    // 5. weights
    idf.resize(F);
    cap_data.resize(nnz);
    if (mode == kTfidf) {
      const double n1 = static_cast<double>(P) + 1.0;  // sklearn smooth_idf: ln((1 + N) / (1 + df)) + 1
      const auto idf_of = [n1](int32_t d) { return std::log(n1 / (static_cast<double>(d) + 1.0)) + 1.0; };
      std::vector<double> small(256);  // most n-grams are rare: tabulate small df
      for (int d = 0; d < 256; ++d) small[d] = idf_of(d);
      for (int64_t f = 0; f < F; ++f) idf[f] = df[f] < 256 ? small[df[f]] : idf_of(df[f]);
      std::vector<double> cap_norm(P);  // l2 norm of each caption's tf-idf vector (1 for empty captions)
      parallel_chunks(P, threads, 8192, [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) {
          double ss = 0;
          for (int64_t k = cap_indptr[p]; k < cap_indptr[p + 1]; ++k) {
            const double v = cap_tf[k] * idf[cap_indices[k]];
            ss += v * v;
          }
          cap_norm[p] = ss > 0 ? std::sqrt(ss) : 1.0;
          for (int64_t k = cap_indptr[p]; k < cap_indptr[p + 1]; ++k)
            cap_data[k] = static_cast<float>(cap_tf[k] * idf[cap_indices[k]] / cap_norm[p]);
        }
      });
      // image rows: mean of the image's caption vectors
      std::vector<int64_t> icnt(I, 0);
      img_indptr.assign(I + 1, 0);
      auto image_pass = [&](bool write) {
        parallel_chunks(I, threads, 2048, [&](int64_t b, int64_t e) {
          std::vector<std::pair<int32_t, double>> buf;
          for (int64_t i = b; i < e; ++i) {
            buf.clear();
            for (int64_t p = img_ptr[i]; p < img_ptr[i + 1]; ++p)
              for (int64_t k = cap_indptr[p]; k < cap_indptr[p + 1]; ++k)
                buf.emplace_back(cap_indices[k], cap_tf[k] * idf[cap_indices[k]] / cap_norm[p]);
            std::sort(buf.begin(), buf.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
            const double inv_c = 1.0 / static_cast<double>(img_ptr[i + 1] - img_ptr[i]);
            int64_t u = 0, w = write ? img_indptr[i] : 0;
            for (size_t k = 0; k < buf.size();) {
              size_t j = k;
              double s = 0;
              while (j < buf.size() && buf[j].first == buf[k].first) s += buf[j++].second;
              if (write) {
                img_indices[w] = buf[k].first;
                img_data[w] = static_cast<float>(s * inv_c);
                ++w;
              }
              ++u;
              k = j;
            }
            if (!write) icnt[i] = u;
          }
        });
      };
      image_pass(false);
      for (int64_t i = 0; i < I; ++i) img_indptr[i + 1] = img_indptr[i] + icnt[i];
      img_indices.resize(img_indptr[I]);
      img_data.resize(img_indptr[I]);
      image_pass(true);
    } else {
      const double log_n = std::log(static_cast<double>(I));
      const auto idf_of = [log_n](int32_t d) { return log_n - std::log(std::max(1.0, static_cast<double>(d))); };
      std::vector<double> small(256);  // most n-grams are rare: tabulate small df
      for (int d = 0; d < 256; ++d) small[d] = idf_of(d);
      for (int64_t f = 0; f < F; ++f) idf[f] = df[f] < 256 ? small[df[f]] : idf_of(df[f]);
      cap_norm.assign(static_cast<size_t>(P) * nn, 0.0);
      cap_len.resize(P);
      std::vector<int64_t> obound(nn + 1);
      for (int k = 0; k <= nn; ++k) obound[k] = order_ptr[nmin - 1 + k] - fbase;
      parallel_chunks(P, threads, 8192, [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) {
          int o = 0;
          for (int64_t k = cap_indptr[p]; k < cap_indptr[p + 1]; ++k) {
            const int32_t f = cap_indices[k];
            while (f >= obound[o + 1]) ++o;
            const double w = static_cast<double>(cap_tf[k]) * idf[f];
            cap_data[k] = static_cast<float>(w);
            cap_norm[p * nn + o] += w * w;
          }
          for (int k = 0; k < nn; ++k) cap_norm[p * nn + k] = std::sqrt(cap_norm[p * nn + k]);
          const int64_t L = tok_ptr[p + 1] - tok_ptr[p];
          cap_len[p] = static_cast<int32_t>(nmax >= 2 ? std::max<int64_t>(0, L - 1) : 0);
        }
      });
    }
  }

  std::vector<int64_t> child = child_ptr(feat_prefix.data(), order_ptr.data(), nmax);
  py::dict out;
  out["child"] = to_numpy(std::move(child));
  out["tok_blob"] = to_numpy(std::move(tt.blob));
  out["tok_off"] = to_numpy(std::move(tt.off));
  out["tok_slots"] = to_numpy(std::move(tt.slots));
  out["feat_prefix"] = to_numpy(std::move(feat_prefix));
  out["feat_last"] = to_numpy(std::move(feat_last));
  out["order_ptr"] = to_numpy(std::move(order_ptr));
  out["cap_indptr"] = to_numpy(std::move(cap_indptr));
  out["cap_indices"] = to_numpy(std::move(cap_indices));
  out["cap_tf"] = to_numpy(std::move(cap_tf));
  out["cap_data"] = to_numpy(std::move(cap_data));
  out["df"] = to_numpy(std::move(df));
  out["idf"] = to_numpy(std::move(idf));
  if (mode == kTfidf) {
    out["img_indptr"] = to_numpy(std::move(img_indptr));
    out["img_indices"] = to_numpy(std::move(img_indices));
    out["img_data"] = to_numpy(std::move(img_data));
  } else {
    out["cap_norm"] = to_numpy(std::move(cap_norm), {static_cast<py::ssize_t>(P), static_cast<py::ssize_t>(nn)});
    out["cap_len"] = to_numpy(std::move(cap_len));
  }
  return out;
}

// Rebuilds the lookup structures of a loaded index (token hash table, trie child ranges) from its
// token strings and n-gram definitions, checking that those are well formed.
py::dict tables(const CArr<uint8_t>& blob_a, const CArr<int64_t>& off_a, const CArr<int32_t>& prefix_a,
                const CArr<int32_t>& last_a, const CArr<int64_t>& order_a) {
  const Span<uint8_t> blob = span(blob_a);
  const Span<int64_t> off = span(off_a), order = span(order_a);
  const Span<int32_t> prefix = span(prefix_a), last = span(last_a);
  check_offsets(off, blob.n, "token offsets");
  const int64_t V = off.n - 1, Fi = prefix.n;
  const int nmax = static_cast<int>(order.n - 1);
  if (last.n != Fi || nmax < 1 || nmax > kMaxOrder || order[0] != 0 || order[1] != V || order[nmax] != Fi)
    throw std::invalid_argument("caption index: inconsistent n-gram arrays");
  for (int n = 1; n <= nmax; ++n)
    if (order[n] < order[n - 1]) throw std::invalid_argument("caption index: bad order offsets");
  std::vector<int32_t> slots(table_size(V), -1);
  std::vector<int64_t> child;
  {
    py::gil_scoped_release nogil;
    const size_t mask = slots.size() - 1;
    for (int64_t id = 0; id < V; ++id) {
      const uint8_t* s = blob.p + off[id];
      const int64_t n = off[id + 1] - off[id];
      if (prefix[id] != -1 || last[id] != id) throw std::invalid_argument("caption index: bad unigram definition");
      size_t i = hash_bytes(s, n) & mask;
      while (slots[i] >= 0) {
        const int32_t o = slots[i];
        if (off[o + 1] - off[o] == n && std::memcmp(blob.p + off[o], s, n) == 0)
          throw std::invalid_argument("caption index: duplicate token");
        i = (i + 1) & mask;
      }
      slots[i] = static_cast<int32_t>(id);
    }
    for (int n = 2; n <= nmax; ++n)
      for (int64_t id = order[n - 1]; id < order[n]; ++id) {
        if (prefix[id] < order[n - 2] || prefix[id] >= order[n - 1] || last[id] < 0 || last[id] >= V)
          throw std::invalid_argument("caption index: bad n-gram definition");
        if (id > order[n - 1] && (prefix[id] < prefix[id - 1] || (prefix[id] == prefix[id - 1] && last[id] <= last[id - 1])))
          throw std::invalid_argument("caption index: n-grams are not sorted");
      }
    child = child_ptr(prefix.p, order.p, nmax);
  }
  py::dict out;
  out["tok_slots"] = to_numpy(std::move(slots));
  out["child"] = to_numpy(std::move(child));
  return out;
}

// ---------------------------------------------------------------------------------------------
// CIDEr-D of new captions (pycocoevalcap's Cider with the index's document frequencies)

struct CiderView {
  Span<uint8_t> tok_blob;
  Span<int64_t> tok_off, order_ptr, img_ptr, cap_indptr;
  Span<int32_t> tok_slots, cap_indices, cap_tf, cap_len, feat_last;
  Span<int64_t> child;
  Span<double> idf, cap_norm;
  int nmax;
  int64_t I, P, F;
  double log_n;

  explicit CiderView(const py::dict& ix) {
    tok_blob = field<uint8_t>(ix, "tok_blob");
    tok_off = field<int64_t>(ix, "tok_off");
    order_ptr = field<int64_t>(ix, "order_ptr");
    img_ptr = field<int64_t>(ix, "img_ptr");
    cap_indptr = field<int64_t>(ix, "cap_indptr");
    tok_slots = field<int32_t>(ix, "tok_slots");
    child = field<int64_t>(ix, "child");
    feat_last = field<int32_t>(ix, "feat_last");
    cap_indices = field<int32_t>(ix, "cap_indices");
    cap_tf = field<int32_t>(ix, "cap_tf");
    cap_len = field<int32_t>(ix, "cap_len");
    idf = field<double>(ix, "idf");
    cap_norm = field<double>(ix, "cap_norm");
    nmax = static_cast<int>(order_ptr.n - 1);
    I = img_ptr.n - 1;
    P = cap_indptr.n - 1;
    F = order_ptr[nmax];
    const auto pow2 = [](int64_t s) { return s > 0 && (s & (s - 1)) == 0; };
    if (nmax < 1 || nmax > kMaxOrder || I < 1 || P < 1 || img_ptr[I] != P || tok_off.n < 1 ||
        order_ptr[1] != tok_off.n - 1 || idf.n != F || cap_norm.n != P * nmax || cap_len.n != P ||
        cap_indices.n != cap_indptr[P] || cap_tf.n != cap_indices.n || !pow2(tok_slots.n) || child.n != F + 1 ||
        feat_last.n != F)
      throw std::invalid_argument("caption index arrays are inconsistent (not a cider-d index?)");
    log_n = std::log(static_cast<double>(I));
  }
};

struct CandScratch {
  std::vector<int64_t> tok, prev, cur;   // token ids (< 0: out of vocabulary), n-gram keys per position
  std::vector<int64_t> pairs;  // positions of n-grams missing from the index
  std::vector<int64_t> keys;
  std::vector<std::pair<const uint8_t*, int64_t>> oov_tokens;
  std::vector<int32_t> slot_f;  // small open-addressing table of the candidate's in-vocabulary features
  std::vector<double> slot_w;   // their weights
  std::vector<uint8_t> slot_o;  // and orders
};

inline size_t small_slot(int32_t f, int shift) {
  return static_cast<size_t>((static_cast<uint32_t>(f) * 0x9E3779B1u) >> shift);
}

double cider_one(const CiderView& v, const uint8_t* s, int64_t n, int64_t image, double sigma, CandScratch& sc) {
  const size_t tmask = static_cast<size_t>(v.tok_slots.n - 1);
  sc.tok.resize(static_cast<size_t>(n / 2 + 1));
  sc.oov_tokens.clear();
  int64_t L = 0;
  split_ws(s, n, [&](int64_t st, int64_t len) {
    const int32_t id = tok_find(v.tok_slots.p, tmask, v.tok_off.p, v.tok_blob.p, s + st, len);
    if (id >= 0) { sc.tok[L++] = id; return; }
    int64_t j = 0;
    for (; j < static_cast<int64_t>(sc.oov_tokens.size()); ++j)
      if (sc.oov_tokens[j].second == len && std::memcmp(sc.oov_tokens[j].first, s + st, len) == 0) break;
    if (j == static_cast<int64_t>(sc.oov_tokens.size())) sc.oov_tokens.emplace_back(s + st, len);
    sc.tok[L++] = -1 - j;
  });
  int64_t next_oov = -1 - static_cast<int64_t>(sc.oov_tokens.size());  // fresh negative keys for unknown n-grams
  const int nn = v.nmax;
  double hnorm[kMaxOrder] = {0};
  // table of in-vocabulary features: at most L n-grams per order
  int bits = 6;
  while ((int64_t{1} << bits) < 2 * L * nn) ++bits;
  const int shift = 32 - bits;
  const size_t tsize = size_t{1} << bits, tmask2 = tsize - 1;
  sc.slot_f.assign(tsize, -1);
  sc.slot_w.resize(tsize);
  sc.slot_o.resize(tsize);
  sc.prev.assign(sc.tok.begin(), sc.tok.begin() + L);
  sc.cur.resize(L);
  sc.keys.resize(L);
  {  // the work below is bound by cache misses: request the lines early
    const int64_t p0 = v.img_ptr[image], p1 = v.img_ptr[image + 1];
    for (int64_t b = v.cap_indptr[p0]; b < v.cap_indptr[p1]; b += 16) {
      __builtin_prefetch(v.cap_indices.p + b);
      __builtin_prefetch(v.cap_tf.p + b);
    }
    for (int64_t i = 0; i < L; ++i)
      if (sc.tok[i] >= 0) {
        __builtin_prefetch(v.child.p + sc.tok[i]);
        __builtin_prefetch(v.idf.p + sc.tok[i]);
      }
  }
  for (int o = 1; o <= nn; ++o) {
    const int64_t m = L - o + 1;
    if (m <= 0) break;
    if (o >= 2) {
      sc.pairs.clear();
      for (int64_t i = 0; i < m; ++i)
        if (sc.prev[i] >= 0) __builtin_prefetch(v.child.p + sc.prev[i]);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t pk = sc.prev[i], lt = sc.tok[i + o - 1];
        int32_t id = -1;
        if (pk >= 0 && lt >= 0) id = trie_find(v.child.p, v.feat_last.p, pk, static_cast<int32_t>(lt));
        if (id >= 0) {
          sc.cur[i] = id;
        } else {
          sc.cur[i] = 0;
          sc.pairs.push_back(i);
        }
      }
      // unknown n-grams: identical (prefix key, last token) pairs share one fresh negative key
      if (!sc.pairs.empty()) {
        std::sort(sc.pairs.begin(), sc.pairs.end(), [&](int64_t ia, int64_t ib) {
          const auto ka = std::make_pair(sc.prev[ia], sc.tok[ia + o - 1]);
          const auto kb = std::make_pair(sc.prev[ib], sc.tok[ib + o - 1]);
          return ka < kb || (ka == kb && ia < ib);
        });
        for (size_t k = 0; k < sc.pairs.size(); ++k) {
          const int64_t i = sc.pairs[k];
          const int64_t j = k > 0 ? sc.pairs[k - 1] : -1;
          const bool same = j >= 0 && sc.prev[i] == sc.prev[j] && sc.tok[i + o - 1] == sc.tok[j + o - 1];
          sc.cur[i] = same ? sc.cur[j] : next_oov--;
        }
      }
      sc.prev.swap(sc.cur);
      for (int64_t i = 0; i < m; ++i)
        if (sc.prev[i] >= 0) __builtin_prefetch(v.idf.p + sc.prev[i]);
    }
    // term frequencies of this order
    std::copy(sc.prev.begin(), sc.prev.begin() + m, sc.keys.begin());
    small_sort(sc.keys.data(), m);
    for (int64_t k = 0; k < m;) {
      int64_t j = k;
      while (j < m && sc.keys[j] == sc.keys[k]) ++j;
      const double tf = static_cast<double>(j - k);
      const int64_t key = sc.keys[k];
      const double w = key >= 0 ? tf * v.idf[key] : tf * (v.log_n - 0.0);  // unseen n-gram: df 0 -> log(1)
      hnorm[o - 1] += w * w;
      if (key >= 0) {
        size_t t = small_slot(static_cast<int32_t>(key), shift);
        while (sc.slot_f[t] >= 0) t = (t + 1) & tmask2;
        sc.slot_f[t] = static_cast<int32_t>(key);
        sc.slot_w[t] = w;
        sc.slot_o[t] = static_cast<uint8_t>(o - 1);
      }
      k = j;
    }
  }
  for (int o = 0; o < nn; ++o) hnorm[o] = std::sqrt(hnorm[o]);
  const int64_t hlen = nn >= 2 ? std::max<int64_t>(0, L - 1) : 0;
  const int64_t p0 = v.img_ptr[image], p1 = v.img_ptr[image + 1];
  double total = 0;
  for (int64_t p = p0; p < p1; ++p) {
    double val[kMaxOrder] = {0};
    for (int64_t b = v.cap_indptr[p]; b < v.cap_indptr[p + 1]; ++b) {
      const int32_t f = v.cap_indices[b];
      size_t t = small_slot(f, shift);
      while (sc.slot_f[t] >= 0 && sc.slot_f[t] != f) t = (t + 1) & tmask2;
      if (sc.slot_f[t] == f) {
        const double wr = static_cast<double>(v.cap_tf[b]) * v.idf[f];
        val[sc.slot_o[t]] += std::min(sc.slot_w[t], wr) * wr;
      }
    }
    const double delta = static_cast<double>(hlen - v.cap_len[p]);
    const double pen = std::pow(2.718281828459045, -(delta * delta) / (2 * sigma * sigma));
    double sum = 0;
    for (int k = 0; k < nn; ++k) {
      double x = val[k];
      const double nr = v.cap_norm[p * nn + k];
      if (hnorm[k] != 0 && nr != 0) x /= hnorm[k] * nr;
      sum += x * pen;
    }
    total += sum / nn;
  }
  return total / static_cast<double>(p1 - p0) * 10.0;
}

py::array_t<double> cider_d(const py::dict& ix, const CArr<uint8_t>& blob_a, const CArr<int64_t>& off_a,
                            const CArr<int64_t>& images_a, double sigma, int threads) {
  const CiderView v(ix);
  const Span<uint8_t> blob = span(blob_a);
  const Span<int64_t> off = span(off_a), images = span(images_a);
  const int64_t K = images.n;
  if (off.n != K + 1) throw std::invalid_argument("cider_d: one offset per candidate (+1) expected");
  check_offsets(off, blob.n, "candidate byte offsets");
  for (int64_t k = 0; k < K; ++k)
    if (images[k] < 0 || images[k] >= v.I)
      throw std::out_of_range("image id " + std::to_string(images[k]) + " is out of range for an index of " +
                              std::to_string(v.I) + " images");
  std::vector<double> out(K);
  {
    py::gil_scoped_release nogil;
    parallel_chunks(K, threads, 2048, [&](int64_t b, int64_t e) {
      CandScratch sc;
      for (int64_t k = b; k < e; ++k) out[k] = cider_one(v, blob.p + off[k], off[k + 1] - off[k], images[k], sigma, sc);
    });
  }
  return to_numpy(std::move(out));
}

// ---------------------------------------------------------------------------------------------
// Per-batch kernels. Rows are gathered into a batch-local CSR whose feature ids are renumbered
// 0..U-1, so the dense accumulators stay small (U = distinct features of the batch).

struct Local {
  std::vector<int64_t> ptr;
  std::vector<int32_t> idx;
  std::vector<float> val;
  int64_t U = 0;
};

void gather_local(const Span<int64_t>& indptr, const Span<int32_t>& indices, const Span<float>& data, int64_t F,
                  const int64_t* rows, int64_t R, Local& L, std::vector<int32_t>* global_of = nullptr) {
  thread_local std::vector<int32_t> stamp;
  if (static_cast<int64_t>(stamp.size()) < F) stamp.resize(F, -1);
  const int64_t nrows = indptr.n - 1;
  L.ptr.assign(R + 1, 0);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t row = rows[r];
    if (row < 0 || row >= nrows) throw std::out_of_range("row " + std::to_string(row) + " is out of range");
    L.ptr[r + 1] = L.ptr[r] + (indptr[row + 1] - indptr[row]);
  }
  L.idx.resize(L.ptr[R]);
  L.val.resize(L.ptr[R]);
  for (int64_t r = 0; r < R; ++r)  // validate before touching the shared stamp array
    for (int64_t e = indptr[rows[r]]; e < indptr[rows[r] + 1]; ++e)
      if (indices[e] < 0 || indices[e] >= F) throw std::out_of_range("caption index: feature id out of range");
  int32_t U = 0;
  for (int64_t r = 0; r < R; ++r) {
    int64_t w = L.ptr[r];
    for (int64_t e = indptr[rows[r]]; e < indptr[rows[r] + 1]; ++e, ++w) {
      const int32_t f = indices[e];
      if (stamp[f] < 0) {
        stamp[f] = U++;
        if (global_of) global_of->push_back(f);
      }
      L.idx[w] = stamp[f];
      L.val[w] = data[e];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t e = indptr[rows[r]]; e < indptr[rows[r] + 1]; ++e) stamp[indices[e]] = -1;
  L.U = U;
}

// out (R x R) = Gram matrix of the selected CSR rows (exactly symmetric).
void gram_cpu(const CArr<int64_t>& indptr_a, const CArr<int32_t>& indices_a, const CArr<float>& data_a, int64_t F,
              const CArr<int64_t>& rows_a, uintptr_t out_ptr, int threads) {
  const Span<int64_t> indptr = span(indptr_a), rows = span(rows_a);
  const Span<int32_t> indices = span(indices_a);
  const Span<float> data = span(data_a);
  if (indices.n != data.n || indptr.n < 1 || indptr[indptr.n - 1] != indices.n)
    throw std::invalid_argument("caption gram: inconsistent CSR arrays");
  float* out = reinterpret_cast<float*>(out_ptr);
  const int64_t R = rows.n;
  py::gil_scoped_release nogil;
  Local L;
  gather_local(indptr, indices, data, F, rows.p, R, L);
#if VSL_WITH_OPENMP
  const int nt = threads_for(L.ptr[R] * R / 2, threads);
#pragma omp parallel num_threads(nt)
#else
  (void)threads;
#endif
  {
    std::vector<double> acc(static_cast<size_t>(L.U) + 1, 0.0);
#if VSL_WITH_OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
    for (int64_t a = 0; a < R; ++a) {
      for (int64_t e = L.ptr[a]; e < L.ptr[a + 1]; ++e) acc[L.idx[e]] = L.val[e];
      for (int64_t b = a; b < R; ++b) {
        double s = 0;
        for (int64_t e = L.ptr[b]; e < L.ptr[b + 1]; ++e) s += acc[L.idx[e]] * L.val[e];
        out[a * R + b] = out[b * R + a] = static_cast<float>(s);
      }
      for (int64_t e = L.ptr[a]; e < L.ptr[a + 1]; ++e) acc[L.idx[e]] = 0.0;
    }
  }
}

// CIDEr-D group means: out (G x G), out[a][b] = mean over captions p of group a, q of group b of
// CIDEr-D(p | reference q) = 10 / nn * sum_n pen(len_p - len_q) * sum_g min(h_g, r_g) r_g / (|h_n| |r_n|).
//
// Work items are runs of up to CB row captions (whole groups, or chunks of one large group), one
// SIMD lane each: acc[u] holds the weights of local feature u in the item's row captions. The batch's
// inverted lists (feature -> column captions holding it) then visit only the (row, column) pairs that
// share a feature: S[q][n] += min(acc[u], r) * r over the postings (q, r) of every feature u of the
// item, after which S is folded into the group means and cleared.
typedef float v4f __attribute__((vector_size(16)));

template <int CB> struct alignas(CB * 4 >= 64 ? 64 : CB * 4) LaneBlock {
  v4f v[CB / 4];
};

template <int CB>
void cider_groups(const Local& L, const std::vector<uint8_t>& order, const std::vector<float>& inv,
                  const std::vector<int32_t>& lens, const std::vector<float>& pen, const int64_t* gptr, int64_t G,
                  int nn, float* out, int threads) {
  static_assert(CB % 4 == 0, "lanes come in vectors of 4");
  constexpr int NV = CB / 4;
  const int64_t Pb = gptr[G], U = L.U;
  // inverted lists of the batch: postings of local feature u are post_q / post_w[post_ptr[u] ..]
  std::vector<int64_t> post_ptr(U + 1, 0);
  for (int64_t e = 0; e < L.ptr[Pb]; ++e) ++post_ptr[L.idx[e] + 1];
  for (int64_t u = 0; u < U; ++u) post_ptr[u + 1] += post_ptr[u];
  std::vector<int32_t> post_q(L.ptr[Pb]);
  std::vector<float> post_w(L.ptr[Pb]);
  {
    std::vector<int64_t> w(post_ptr.begin(), post_ptr.end() - 1);
    for (int64_t q = 0; q < Pb; ++q)
      for (int64_t e = L.ptr[q]; e < L.ptr[q + 1]; ++e) {
        const int64_t k = w[L.idx[e]]++;
        post_q[k] = static_cast<int32_t>(q);
        post_w[k] = L.val[e];
      }
  }
  // work items: runs of whole groups with <= CB captions in all, or one larger group
  std::vector<std::pair<int64_t, int64_t>> items;
  for (int64_t g = 0; g < G;) {
    int64_t g1 = g, tot = 0;
    while (g1 < G && (g1 == g || tot + (gptr[g1 + 1] - gptr[g1]) <= CB)) {
      tot += gptr[g1 + 1] - gptr[g1];
      ++g1;
    }
    items.emplace_back(g, g1);
    g = g1;
  }
  std::vector<int64_t> qgroup(Pb);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t q = gptr[g]; q < gptr[g + 1]; ++q) qgroup[q] = g;
  const int64_t nitems = static_cast<int64_t>(items.size());
  const double scale = 10.0 / static_cast<double>(nn);
#if VSL_WITH_OPENMP
  const int nt = static_cast<int>(std::min<int64_t>(nitems, threads_for(nitems * (L.ptr[Pb] + Pb * nn), threads)));
#pragma omp parallel num_threads(nt)
#else
  (void)threads;
#endif
  {
    using Block = LaneBlock<CB>;
    std::vector<Block> acc(static_cast<size_t>(U) + 1), S(static_cast<size_t>(Pb) * nn), lane_inv(nn);
    std::memset(static_cast<void*>(acc.data()), 0, acc.size() * sizeof(Block));
    std::memset(static_cast<void*>(S.data()), 0, S.size() * sizeof(Block));
    float* accf = reinterpret_cast<float*>(acc.data());
    float* lif = reinterpret_cast<float*>(lane_inv.data());
    std::vector<int32_t> touched;
    std::vector<uint8_t> seen(static_cast<size_t>(U) + 1, 0);
    int64_t lane_group[CB];
    int32_t lane_len[CB];
    std::vector<double> t(static_cast<size_t>(G) * CB);
#if VSL_WITH_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t it = 0; it < nitems; ++it) {
      const int64_t g0 = items[it].first, g1 = items[it].second;
      for (int64_t g = g0; g < g1; ++g) std::fill(out + g * G, out + (g + 1) * G, 0.0f);
      for (int64_t c0 = gptr[g0]; c0 < gptr[g1]; c0 += CB) {
        const int kc = static_cast<int>(std::min<int64_t>(CB, gptr[g1] - c0));
        touched.clear();
        for (int k = 0; k < CB; ++k) {
          if (k < kc) {
            const int64_t p = c0 + k;
            lane_group[k] = qgroup[p];
            lane_len[k] = lens[p];
            for (int n = 0; n < nn; ++n) lif[n * CB + k] = inv[p * nn + n];
            for (int64_t e = L.ptr[p]; e < L.ptr[p + 1]; ++e) {
              const int32_t u = L.idx[e];
              accf[static_cast<size_t>(u) * CB + k] = L.val[e];
              if (!seen[u]) { seen[u] = 1; touched.push_back(u); }
            }
          } else {
            lane_group[k] = -1;
            lane_len[k] = 0;
            for (int n = 0; n < nn; ++n) lif[n * CB + k] = 0.0f;
          }
        }
        // clipped dot products over the postings of the item's features
        for (const int32_t u : touched) {
          const Block a = acc[u];
          Block* Sn = S.data() + order[u];
          for (int64_t k = post_ptr[u]; k < post_ptr[u + 1]; ++k) {
            const float rv = post_w[k];
            const v4f r = {rv, rv, rv, rv};
            Block& dst = Sn[static_cast<size_t>(post_q[k]) * nn];
            for (int v = 0; v < NV; ++v) {
              const v4f x = a.v[v];
              const v4f m = x < r ? x : r;
              dst.v[v] += m * r;
            }
          }
          acc[u] = Block{};
          seen[u] = 0;
        }
        // normalise, length penalty, group means; clear S
        std::fill(t.begin(), t.end(), 0.0);
        for (int64_t q = 0; q < Pb; ++q) {
          v4f sim[NV];
          for (int v = 0; v < NV; ++v) sim[v] = v4f{0, 0, 0, 0};
          Block* Sq = S.data() + static_cast<size_t>(q) * nn;
          for (int n = 0; n < nn; ++n) {
            const float iq = inv[q * nn + n];
            const v4f vq = {iq, iq, iq, iq};
            for (int v = 0; v < NV; ++v) sim[v] += Sq[n].v[v] * lane_inv[n].v[v] * vq;
            Sq[n] = Block{};
          }
          float simf[CB];
          std::memcpy(simf, sim, sizeof(simf));
          const int32_t lq = lens[q];
          double* tq = t.data() + qgroup[q] * CB;
          for (int k = 0; k < kc; ++k) {
            const int32_t d = lane_len[k] > lq ? lane_len[k] - lq : lq - lane_len[k];
            tq[k] += static_cast<double>(simf[k] * pen[d]);
          }
        }
        for (int64_t b = 0; b < G; ++b) {
          const double cb = static_cast<double>(gptr[b + 1] - gptr[b]);
          for (int k = 0; k < kc; ++k) {
            const int64_t ga = lane_group[k];
            const double ca = static_cast<double>(gptr[ga + 1] - gptr[ga]);
            out[ga * G + b] += static_cast<float>(t[b * CB + k] * scale / (ca * cb));
          }
        }
      }
    }
  }
}

void cider_cpu(const CArr<int64_t>& indptr_a, const CArr<int32_t>& indices_a, const CArr<float>& data_a,
               const CArr<float>& inv_norm_a, const CArr<int32_t>& lens_a, const CArr<int64_t>& bounds_a,
               const CArr<int64_t>& caps_a, const CArr<int64_t>& gptr_a, double sigma, uintptr_t out_ptr, int threads) {
  const Span<int64_t> indptr = span(indptr_a), bounds = span(bounds_a), caps = span(caps_a), gptr = span(gptr_a);
  const Span<int32_t> indices = span(indices_a), lens_all = span(lens_a);
  const Span<float> data = span(data_a), inv_all = span(inv_norm_a);
  const int nn = static_cast<int>(bounds.n - 1);
  const int64_t P = indptr.n - 1, Pb = caps.n, G = gptr.n - 1;
  if (nn < 1 || nn > kMaxOrder || indices.n != data.n || P < 0 || indptr[P] != indices.n || inv_all.n != P * nn ||
      lens_all.n != P)
    throw std::invalid_argument("caption cider: inconsistent index arrays");
  if (G < 0 || gptr[0] != 0 || gptr[G] != Pb) throw std::invalid_argument("caption cider: bad group offsets");
  for (int64_t g = 0; g < G; ++g)
    if (gptr[g + 1] <= gptr[g]) throw std::invalid_argument("caption cider: empty group");
  const int64_t F = bounds[nn];
  float* out = reinterpret_cast<float*>(out_ptr);
  py::gil_scoped_release nogil;
  Local L;
  std::vector<int32_t> global_of;
  gather_local(indptr, indices, data, F, caps.p, Pb, L, &global_of);
  std::vector<uint8_t> order(L.U);
  for (int64_t u = 0; u < L.U; ++u) {
    int n = 0;
    while (global_of[u] >= bounds[n + 1]) ++n;
    order[u] = static_cast<uint8_t>(n);
  }
  std::vector<float> inv(static_cast<size_t>(Pb) * nn);
  std::vector<int32_t> lens(Pb);
  int32_t maxlen = 0;
  for (int64_t j = 0; j < Pb; ++j) {
    const int64_t p = caps[j];
    for (int n = 0; n < nn; ++n) inv[j * nn + n] = inv_all[p * nn + n];
    lens[j] = lens_all[p];
    maxlen = std::max(maxlen, lens[j]);
  }
  std::vector<float> pen(static_cast<size_t>(maxlen) + 1);
  for (int32_t d = 0; d <= maxlen; ++d)
    pen[d] = static_cast<float>(std::exp(-static_cast<double>(d) * d / (2.0 * sigma * sigma)));
  int64_t maxg = 0;
  for (int64_t g = 0; g < G; ++g) maxg = std::max(maxg, gptr[g + 1] - gptr[g]);
  (void)maxg;
  cider_groups<16>(L, order, inv, lens, pen, gptr.p, G, nn, out, threads);
}

}  // namespace
}  // namespace caption
}  // namespace vsl

void register_caption_index(py::module_& m) {
  using namespace vsl::caption;
  m.def("caption_build", &build, "Build the caption index arrays (see vsl_ext/captions.py)", py::arg("blob"),
        py::arg("cap_off"), py::arg("img_ptr"), py::arg("nmin"), py::arg("nmax"), py::arg("mode"), py::arg("threads"));
  m.def("caption_tables", &tables, py::arg("tok_blob"), py::arg("tok_off"), py::arg("feat_prefix"),
        py::arg("feat_last"), py::arg("order_ptr"));
  m.def("caption_cider_d", &cider_d, py::arg("index"), py::arg("blob"), py::arg("off"), py::arg("image_ids"),
        py::arg("sigma"), py::arg("threads"));
  m.def("caption_gram_cpu", &gram_cpu, py::arg("indptr"), py::arg("indices"), py::arg("data"),
        py::arg("num_features"), py::arg("rows"), py::arg("out"), py::arg("threads"));
  m.def("caption_cider_cpu", &cider_cpu, py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("inv_norm"),
        py::arg("lens"), py::arg("bounds"), py::arg("caps"), py::arg("gptr"), py::arg("sigma"), py::arg("out"),
        py::arg("threads"));
  m.def("caption_split", [](const CArr<uint8_t>& blob_a) {
    // whitespace tokenizer exposed for tests: byte spans of Python str.split()
    const Span<uint8_t> blob = span(blob_a);
    std::vector<int64_t> spans;
    split_ws(blob.p, blob.n, [&](int64_t s, int64_t n) { spans.push_back(s); spans.push_back(n); });
    return to_numpy(std::move(spans));
  });
#if VSL_WITH_CUDA
  m.def(
      "caption_gram_cuda",
      [](uintptr_t indptr, uintptr_t indices, uintptr_t data, uintptr_t rows, int64_t B, int smem_cap, uintptr_t out,
         int device, uintptr_t stream) {
        gram_cuda(reinterpret_cast<const int64_t*>(indptr), reinterpret_cast<const int32_t*>(indices),
                  reinterpret_cast<const float*>(data), reinterpret_cast<const int64_t*>(rows), B, smem_cap,
                  reinterpret_cast<float*>(out), device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "caption_cider_cuda",
      [](uintptr_t indptr, uintptr_t indices, uintptr_t data, uintptr_t inv_norm, uintptr_t lens,
         const std::vector<int64_t>& bounds, uintptr_t caps, int64_t Pb, uintptr_t gptr, int64_t G, bool singleton,
         double sigma, int smem_cap, uintptr_t scratch, uintptr_t out, int device, uintptr_t stream) {
        cider_cuda(reinterpret_cast<const int64_t*>(indptr), reinterpret_cast<const int32_t*>(indices),
                   reinterpret_cast<const float*>(data), reinterpret_cast<const float*>(inv_norm),
                   reinterpret_cast<const int32_t*>(lens), bounds, reinterpret_cast<const int64_t*>(caps), Pb,
                   reinterpret_cast<const int64_t*>(gptr), G, singleton, sigma, smem_cap,
                   reinterpret_cast<float*>(scratch), reinterpret_cast<float*>(out), device, stream);
      },
      py::call_guard<py::gil_scoped_release>());
#endif
}
