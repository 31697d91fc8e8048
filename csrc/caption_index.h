// The caption index's native entry points (vsl_ext.CaptionIndex, vsl_ext/caption_index.py): plain C++
// over read-only spans of the index's arrays, results in std::vector; the numpy conversion is the
// caption index section of csrc/bindings.cpp, which also exports the constants below to Python.
//
// Layout of an index (arrays owned by Python as numpy arrays):
//   tokens     tok_blob (uint8, UTF-8) + tok_off (int64, V + 1); token id = unigram id
//   features   "internal" ids over n-gram orders 1..nmax, grouped by order: order_ptr[n] = number of
//              internal ids of order <= n. An n-gram (n >= 2) is (prefix (n-1)-gram id, last token):
//              feat_prefix / feat_last (int32). Output ("feature") ids are internal ids minus
//              order_ptr[nmin - 1], i.e. only orders nmin..nmax, still grouped by order.
//   captions   CSR cap_indptr (int64) / cap_indices (int32, sorted per row) / cap_tf (int32 counts) /
//              cap_data (float32: l2-normalised tf-idf, or CIDEr-D weights tf * idf)
//   images     tfidf: CSR img_indptr / img_indices / img_data (mean caption vectors); cider-d:
//              cap_norm (float64, P x nn, l2 norm per caption and order) and cap_len (int32, bigrams)
//   lookups    rebuilt from the arrays above, never read from files: tok_slots (open-addressing hash
//              table of the tokens, int32 token id or -1) and child (int64): n-grams of each order are
//              numbered in (prefix, last) order, so child[id] .. child[id + 1] are the sorted
//              extensions of n-gram id (a trie).
// Errors: std::invalid_argument (bad arrays or arguments), std::out_of_range (an id out of range),
// std::length_error (more than 2^31 - 1 tokens or n-grams).
#pragma once
#include <cstdint>
#include <vector>

namespace vsl {
namespace caption_index {

// Highest n-gram order an index may have.
constexpr int kMaxOrder = 32;
// CUDA kernels: a row of up to this many entries (int32 id + float32 value, 8 bytes each) is staged
// in shared memory; 6,144 entries are 48 KiB, the most a launch gets without opting in.
constexpr int kSmemRowCap = 6144;

enum class Mode { tfidf, cider_d };

template <typename T> struct Span {
  const T* p = nullptr;
  int64_t n = 0;
  const T& operator[](int64_t i) const { return p[i]; }
};

// Arrays of a new index (layout above); P captions, nn = nmax - nmin + 1 orders. The image rows
// (tfidf) or cap_norm / cap_len (cider-d) are empty for the other mode.
struct BuiltIndex {
  std::vector<uint8_t> tok_blob;
  std::vector<int64_t> tok_off, order_ptr, child, cap_indptr, img_indptr;
  std::vector<int32_t> tok_slots, feat_prefix, feat_last, cap_indices, cap_tf, df, img_indices, cap_len;
  std::vector<float> cap_data, img_data;
  std::vector<double> idf, cap_norm;
  int64_t num_captions = 0;
  int num_orders = 0;
};

// Indexes the captions cap_off[p] .. cap_off[p + 1] of blob (UTF-8, split on Python whitespace);
// image i owns captions img_ptr[i] .. img_ptr[i + 1]. tfidf: document frequencies over captions,
// smooth idf; cider-d: over images, nmin must be 1.
BuiltIndex build(Span<uint8_t> blob, Span<int64_t> cap_off, Span<int64_t> img_ptr, int nmin, int nmax, Mode mode,
                 int threads);

struct LookupTables {
  std::vector<int32_t> tok_slots;
  std::vector<int64_t> child;
};

// Rebuilds the lookups of a loaded index from its tokens and n-gram definitions, checking that those
// are well formed (distinct tokens, n-grams sorted and made of ids of the previous order).
LookupTables lookup_tables(Span<uint8_t> tok_blob, Span<int64_t> tok_off, Span<int32_t> feat_prefix,
                           Span<int32_t> feat_last, Span<int64_t> order_ptr);

// The arrays of a cider-d index (nmin = 1) that cider_d reads, lookups included.
struct CiderIndex {
  Span<uint8_t> tok_blob;
  Span<int64_t> tok_off, order_ptr, img_ptr, cap_indptr, child;
  Span<int32_t> tok_slots, cap_indices, cap_tf, cap_len, feat_last;
  Span<double> idf, cap_norm;
};

// CIDEr-D of candidate k (bytes off[k] .. off[k + 1] of blob) against the captions of image
// image_ids[k]: pycocoevalcap's Cider with the index's document frequencies. Length K.
std::vector<double> cider_d(const CiderIndex& index, Span<uint8_t> blob, Span<int64_t> off, Span<int64_t> image_ids,
                            double sigma, int threads);

// out (R x R, row-major) = Gram matrix of the CSR rows `rows` (exactly symmetric): the tfidf and
// phrases similarity of a batch. Feature ids must lie in [0, num_features).
void gram_cpu(Span<int64_t> indptr, Span<int32_t> indices, Span<float> data, int64_t num_features, Span<int64_t> rows,
              float* out, int threads);

// out (G x G) = mean over captions p of group a and q of group b of CIDEr-D(caption caps[p] |
// reference caps[q]); group g holds positions gptr[g] .. gptr[g + 1] of caps. inv_norm (P x nn) are
// the reciprocal per-order norms, lens the bigram counts, bounds (nn + 1) the first feature id of
// each order.
void cider_matrix_cpu(Span<int64_t> indptr, Span<int32_t> indices, Span<float> data, Span<float> inv_norm,
                      Span<int32_t> lens, Span<int64_t> bounds, Span<int64_t> caps, Span<int64_t> gptr, double sigma,
                      float* out, int threads);

// (start, length) byte pairs of the tokens of Python's str.split() over UTF-8 text (for tests).
std::vector<int64_t> split_whitespace(Span<uint8_t> text);

}  // namespace caption_index
}  // namespace vsl
