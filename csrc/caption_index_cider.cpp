// CIDEr-D of new captions against an index's references (vsl_ext.CaptionIndex.cider_d): pycocoevalcap's
// Cider with the index's document frequencies.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "caption_index.h"
#include "caption_index_common.h"
#include "caption_index_lookup.h"
#include "caption_index_tokenize.h"

namespace vsl {
namespace caption_index {
namespace {

// A cider-d index's arrays, checked for consistency, and the figures derived from them.
struct CiderView : CiderIndex {
  int nmax;
  int64_t I, P, F;
  double log_n;

  explicit CiderView(const CiderIndex& ix) : CiderIndex(ix) {
    nmax = static_cast<int>(order_ptr.n - 1);
    I = img_ptr.n - 1;
    P = cap_indptr.n - 1;
    const auto pow2 = [](int64_t s) { return s > 0 && (s & (s - 1)) == 0; };
    if (nmax < 1 || nmax > kMaxOrder || I < 1 || P < 1 || img_ptr[I] != P || tok_off.n < 1 ||
        order_ptr[1] != tok_off.n - 1 || idf.n != order_ptr[nmax] || cap_norm.n != P * nmax || cap_len.n != P ||
        cap_indices.n != cap_indptr[P] || cap_tf.n != cap_indices.n || !pow2(tok_slots.n) ||
        child.n != order_ptr[nmax] + 1 || feat_last.n != order_ptr[nmax])
      throw std::invalid_argument("caption index arrays are inconsistent (not a cider-d index?)");
    F = order_ptr[nmax];
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

}  // namespace

std::vector<double> cider_d(const CiderIndex& index, Span<uint8_t> blob, Span<int64_t> off, Span<int64_t> images,
                            double sigma, int threads) {
  const CiderView v(index);
  const int64_t K = images.n;
  if (off.n != K + 1) throw std::invalid_argument("cider_d: one offset per candidate (+1) expected");
  check_offsets(off, blob.n, "candidate byte offsets");
  for (int64_t k = 0; k < K; ++k)
    if (images[k] < 0 || images[k] >= v.I)
      throw std::out_of_range("image id " + std::to_string(images[k]) + " is out of range for an index of " +
                              std::to_string(v.I) + " images");
  std::vector<double> out(K);
  parallel_chunks(K, threads, 2048, [&](int64_t b, int64_t e) {
    CandScratch sc;
    for (int64_t k = b; k < e; ++k) out[k] = cider_one(v, blob.p + off[k], off[k + 1] - off[k], images[k], sigma, sc);
  });
  return out;
}

}  // namespace caption_index
}  // namespace vsl
