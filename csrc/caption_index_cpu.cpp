// Per-batch similarity kernels of the caption index on the CPU: the Gram matrix of a batch's rows
// (tfidf, phrases) and the CIDEr-D means between a batch's caption groups (cider-d).
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

namespace vsl {
namespace caption_index {
namespace {

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
    if (indptr[row] < 0 || indptr[row] > indptr[row + 1] || indptr[row + 1] > indices.n)
      throw std::invalid_argument("caption index: bad row offsets");
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

}  // namespace

void gram_cpu(Span<int64_t> indptr, Span<int32_t> indices, Span<float> data, int64_t F, Span<int64_t> rows, float* out,
              int threads) {
  if (indices.n != data.n || indptr.n < 1 || indptr[indptr.n - 1] != indices.n)
    throw std::invalid_argument("caption gram: inconsistent CSR arrays");
  const int64_t R = rows.n;
  Local L;
  gather_local(indptr, indices, data, F, rows.p, R, L);
  // rows a in any order, each by one thread: the result does not depend on the thread count
  Items items(R);
  auto worker = [&](Items& q) {
    int64_t a;
    if (!q.take(a)) return;
    std::vector<double> acc(static_cast<size_t>(L.U) + 1, 0.0);
    do {
      for (int64_t e = L.ptr[a]; e < L.ptr[a + 1]; ++e) acc[L.idx[e]] = L.val[e];
      for (int64_t b = a; b < R; ++b) {
        double s = 0;
        for (int64_t e = L.ptr[b]; e < L.ptr[b + 1]; ++e) s += acc[L.idx[e]] * L.val[e];
        out[a * R + b] = out[b * R + a] = static_cast<float>(s);
      }
      for (int64_t e = L.ptr[a]; e < L.ptr[a + 1]; ++e) acc[L.idx[e]] = 0.0;
    } while (q.take(a));
  };
  items.run(threads_for(L.ptr[R] * R / 2, threads), worker);
}

namespace {

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
  const int nt = static_cast<int>(std::min<int64_t>(nitems, threads_for(nitems * (L.ptr[Pb] + Pb * nn), threads)));
  // items in any order, each by one thread with its own scratch: the result does not depend on nt
  Items work(nitems);
  auto worker = [&](Items& q) {
    int64_t it;
    if (!q.take(it)) return;
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
    do {
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
              if (!seen[u]) {
                seen[u] = 1;
                touched.push_back(u);
              }
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
    } while (q.take(it));
  };
  work.run(nt, worker);
}

}  // namespace

void cider_matrix_cpu(Span<int64_t> indptr, Span<int32_t> indices, Span<float> data, Span<float> inv_all,
                      Span<int32_t> lens_all, Span<int64_t> bounds, Span<int64_t> caps, Span<int64_t> gptr,
                      double sigma, float* out, int threads) {
  const int nn = static_cast<int>(bounds.n - 1);
  const int64_t P = indptr.n - 1, Pb = caps.n, G = gptr.n - 1;
  if (nn < 1 || nn > kMaxOrder || indices.n != data.n || P < 0 || indptr[P] != indices.n || inv_all.n != P * nn ||
      lens_all.n != P)
    throw std::invalid_argument("caption cider: inconsistent index arrays");
  if (G < 0 || gptr[0] != 0 || gptr[G] != Pb) throw std::invalid_argument("caption cider: bad group offsets");
  for (int64_t g = 0; g < G; ++g)
    if (gptr[g + 1] <= gptr[g]) throw std::invalid_argument("caption cider: empty group");
  const int64_t F = bounds[nn];
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
    if (lens[j] < 0) throw std::invalid_argument("caption cider: negative caption length");
    maxlen = std::max(maxlen, lens[j]);
  }
  std::vector<float> pen(static_cast<size_t>(maxlen) + 1);
  for (int32_t d = 0; d <= maxlen; ++d)
    pen[d] = static_cast<float>(std::exp(-static_cast<double>(d) * d / (2.0 * sigma * sigma)));
  cider_groups<16>(L, order, inv, lens, pen, gptr.p, G, nn, out, threads);
}


}  // namespace caption_index
}  // namespace vsl
