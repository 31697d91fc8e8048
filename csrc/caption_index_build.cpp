// Building a caption index (vsl_ext.CaptionIndex.from_captions): vocabulary, n-gram ids, caption rows,
// document frequencies and the tf-idf or CIDEr-D weights; and the lookups of a loaded index.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
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

// The trie's child array (size Fi + 1, see caption_index_lookup.h) from feat_prefix, for ids grouped
// by order and sorted by prefix within one.
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

}  // namespace

BuiltIndex build(Span<uint8_t> blob, Span<int64_t> cap_off, Span<int64_t> img_ptr, int nmin, int nmax, Mode mode,
                 int threads) {
  if (nmin < 1 || nmax < nmin || nmax > kMaxOrder)
    throw std::invalid_argument("caption index: ngram orders must satisfy 1 <= nmin <= nmax <= " +
                                std::to_string(kMaxOrder));
  if (mode == Mode::cider_d && nmin != 1) throw std::invalid_argument("caption index: cider-d needs nmin == 1");
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
        const int32_t unit = mode == Mode::tfidf ? static_cast<int32_t>(p) : img_of[p];
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
    if (mode == Mode::tfidf) {
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

  BuiltIndex out;
  out.child = child_ptr(feat_prefix.data(), order_ptr.data(), nmax);
  out.tok_blob = std::move(tt.blob);
  out.tok_off = std::move(tt.off);
  out.tok_slots = std::move(tt.slots);
  out.feat_prefix = std::move(feat_prefix);
  out.feat_last = std::move(feat_last);
  out.order_ptr = std::move(order_ptr);
  out.cap_indptr = std::move(cap_indptr);
  out.cap_indices = std::move(cap_indices);
  out.cap_tf = std::move(cap_tf);
  out.cap_data = std::move(cap_data);
  out.df = std::move(df);
  out.idf = std::move(idf);
  out.img_indptr = std::move(img_indptr);
  out.img_indices = std::move(img_indices);
  out.img_data = std::move(img_data);
  out.cap_norm = std::move(cap_norm);
  out.cap_len = std::move(cap_len);
  out.num_captions = P;
  out.num_orders = nn;
  return out;
}

// Rebuilds the lookup structures of a loaded index (token hash table, trie child ranges) from its
// token strings and n-gram definitions, checking that those are well formed.
LookupTables lookup_tables(Span<uint8_t> blob, Span<int64_t> off, Span<int32_t> prefix, Span<int32_t> last,
                           Span<int64_t> order) {
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
        if (id > order[n - 1] &&
            (prefix[id] < prefix[id - 1] || (prefix[id] == prefix[id - 1] && last[id] <= last[id - 1])))
          throw std::invalid_argument("caption index: n-grams are not sorted");
      }
    child = child_ptr(prefix.p, order.p, nmax);
  }
  return {std::move(slots), std::move(child)};
}

std::vector<int64_t> split_whitespace(Span<uint8_t> text) {
  std::vector<int64_t> spans;
  split_ws(text.p, text.n, [&](int64_t s, int64_t n) {
    spans.push_back(s);
    spans.push_back(n);
  });
  return spans;
}

}  // namespace caption_index
}  // namespace vsl
