// CPU kernels for the sampler's decode steps, as XLA FFI custom calls (built and registered by
// r1jax/kernels/cpu.py). A decode step is many tiny problems: XLA:CPU runs them far below the machine's
// rate, so these two run them as plain loops over the real work.
//
// R1jaxRoutedExperts: y[t] = sum_j w[t, j] * Expert_{idx[t, j]}(x[t]),  Expert_e(v) = (silu(v Wg_e) * (v Wu_e)) Wd_e.
//   Only the chosen experts run, each over the rows routed to it (~16 rows per expert for a 64-row step
//   with top-2 of 8 experts), gathered into one contiguous block. The matmul keeps a 6-row block of
//   outputs in vector registers and streams the weight rows through it.
// R1jaxMlaDecodeAttention: absorbed MLA attention of one query token per row against the latent cache:
//   o[b, n] = sum_s softmax_s(scale * (q_lat[b, n] . c[b, s] + q_pe[b, n] . k_pe[b, s])) c[b, s] over the
//   slots s with mask[b, s] (all slots, uniformly, when a row has none, as the XLA path does).
//
// f32 only. Sums run in a fixed order whichever thread computes what, so results are deterministic and
// differ from XLA's only by float rounding. Work is shared with XLA's intra-op thread pool (ParallelFor).
#include <algorithm>
#ifdef __AVX2__
#include <immintrin.h>
#endif
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// One vector register of floats (built with -march=native: AVX-512 or AVX2), and the accumulator block:
// 6 rows x kCols vectors stay in registers (24 of AVX-512's 32 registers, 12 of AVX2's 16); 6 rows
// measured 1.2-1.7x faster than 4 on AVX2 for 16-64-row blocks.
#ifdef __AVX512F__
constexpr int kLanes = 16, kCols = 4;
#else
constexpr int kLanes = 8, kCols = 2;
#endif
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef float vfu __attribute__((vector_size(4 * kLanes), aligned(4), may_alias));

inline vf Load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void Store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }

// Y[R, C * kLanes] = X[R, K] W[K, C * kLanes]; rows of X, W and Y are ldx, ldw and ldy floats apart.
template <int R, int C>
inline void Block(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k_dim, float* y,
                  int64_t ldy) {
  vf acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = vf{};
  for (int64_t k = 0; k < k_dim; ++k) {
    vf wv[C];
    for (int c = 0; c < C; ++c) wv[c] = Load(w + k * ldw + kLanes * c);
    for (int r = 0; r < R; ++r) {
      const float a = x[r * ldx + k];
      for (int c = 0; c < C; ++c) acc[r][c] += a * wv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) Store(y + r * ldy + kLanes * c, acc[r][c]);
}

// Weights come in column panels: panel c of W [K, N] is W[:, c * P : (c + 1) * P], stored contiguously
// ([N / P, K, P]; r1jax.kernels.cpu.routed_experts lays them out so, once per jitted program when the
// weights are loop-invariant). A panel is then read as one sequential stream instead of one cache line per
// weight row, and stays in cache for every 6-row block of X. The panel width P is kCols vectors, or, for
// sizes that are not a multiple of that, the widest of kCols / 2, kCols / 4, ... 1 vectors that divides N
// (the weights' shape says which): small models keep the kernel on wide-vector machines.
constexpr int64_t kPanel = kCols * kLanes;
static_assert(kCols == 2 || kCols == 4, "MatMulPanels dispatches kCols, kCols / 2 and 1 vectors");

// Y[n, N] = X[n, K] W[K, N]: X and Y row-major, W in panels of C vectors.
template <int C>
void MatMul(const float* x, int64_t n, int64_t k_dim, const float* w_panels, int64_t n_dim, float* y) {
  constexpr int64_t panel_width = C * kLanes;
  for (int64_t c = 0; c < n_dim / panel_width; ++c) {
    const float* panel = w_panels + c * k_dim * panel_width;
    float* yc = y + c * panel_width;
    int64_t i = 0;
    for (; i + 6 <= n; i += 6) Block<6, C>(x + i * k_dim, k_dim, panel, panel_width, k_dim, yc + i * n_dim, n_dim);
    switch (n - i) {
      case 5: Block<5, C>(x + i * k_dim, k_dim, panel, panel_width, k_dim, yc + i * n_dim, n_dim); break;
      case 4: Block<4, C>(x + i * k_dim, k_dim, panel, panel_width, k_dim, yc + i * n_dim, n_dim); break;
      case 3: Block<3, C>(x + i * k_dim, k_dim, panel, panel_width, k_dim, yc + i * n_dim, n_dim); break;
      case 2: Block<2, C>(x + i * k_dim, k_dim, panel, panel_width, k_dim, yc + i * n_dim, n_dim); break;
      case 1: Block<1, C>(x + i * k_dim, k_dim, panel, panel_width, k_dim, yc + i * n_dim, n_dim); break;
      default: break;
    }
  }
}

// Whether `width` is a panel width MatMulPanels runs: kPanel, kPanel / 2, ..., kLanes.
bool SupportedPanel(int64_t width) {
  for (int64_t w = kPanel; w >= kLanes; w /= 2)
    if (width == w) return true;
  return false;
}

// MatMul for weights in panels of `width` columns (a SupportedPanel width).
void MatMulPanels(const float* x, int64_t n, int64_t k_dim, const float* w_panels, int64_t n_dim, int64_t width,
                  float* y) {
  if (width == kPanel) return MatMul<kCols>(x, n, k_dim, w_panels, n_dim, y);
  if (width == kPanel / 2) return MatMul<kCols / 2>(x, n, k_dim, w_panels, n_dim, y);
  return MatMul<1>(x, n, k_dim, w_panels, n_dim, y);
}

// Runs fn(i) for i in [0, n) on the calling thread and on the other threads of XLA's intra-op pool, each
// claiming the next item until none is left. The caller waits only for items a helper has claimed, so it
// never waits on a task that has not started (no deadlock when the pool is busy or has no other thread);
// a helper the pool starts after the call returned finds no item left and exits without touching fn's
// data (the counters it reads are kept alive by the shared_ptr).
template <typename Fn>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const Fn& fn) {
  struct Work {
    std::atomic<int64_t> next{0}, finished{0};
  };
  auto work = std::make_shared<Work>();
  auto drain = [work, n](const Fn& f) {
    for (int64_t i; (i = work->next.fetch_add(1)) < n; work->finished.fetch_add(1)) f(i);
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, n - 1);
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([drain, fn] { drain(fn); });
  drain(fn);
  while (work->finished.load() < n) std::this_thread::yield();
}

ffi::Error RoutedExpertsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> idx,
                             ffi::Buffer<ffi::F32> weights, ffi::Buffer<ffi::F32> wg, ffi::Buffer<ffi::F32> wu,
                             ffi::Buffer<ffi::F32> wd, ffi::ResultBuffer<ffi::F32> out) {
  const auto xd = x.dimensions(), id = idx.dimensions(), gd = wg.dimensions(), dd = wd.dimensions();
  if (xd.size() != 2 || id.size() != 2 || gd.size() != 4 || dd.size() != 4)
    return ffi::Error::InvalidArgument(
        "routed_experts: expected x [T, D], idx [T, k], gate/up panels [E, F/W, D, W], down panels [E, D/W, F, W]");
  const int64_t t_dim = xd[0], d_dim = xd[1], k = id[1], e_dim = gd[0], f_dim = gd[1] * gd[3];
  if (!SupportedPanel(gd[3]) || !SupportedPanel(dd[3]))
    return ffi::Error::InvalidArgument(
        "routed_experts: weight panels must be R1jaxPanelWidth() wide, or that halved down to one vector");
  if (id[0] != t_dim || gd[2] != d_dim || dd[0] != e_dim || dd[1] * dd[3] != d_dim || dd[2] != f_dim ||
      weights.element_count() != static_cast<size_t>(t_dim * k) || wu.element_count() != wg.element_count())
    return ffi::Error::InvalidArgument("routed_experts: inconsistent shapes");
  const int32_t* ip = idx.typed_data();
  const float* wp = weights.typed_data();

  // Slots (token, choice) grouped by expert, in token order; zero-weight slots (padding) are skipped.
  std::vector<int64_t> start(e_dim + 1, 0), slot;
  slot.reserve(t_dim * k);
  for (int64_t s = 0; s < t_dim * k; ++s) {
    if (ip[s] < 0 || ip[s] >= e_dim) return ffi::Error::InvalidArgument("routed_experts: expert id out of range");
    if (wp[s] != 0.f) ++start[ip[s] + 1];
  }
  for (int64_t e = 0; e < e_dim; ++e) start[e + 1] += start[e];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  slot.resize(start[e_dim]);
  for (int64_t s = 0; s < t_dim * k; ++s)
    if (wp[s] != 0.f) slot[fill[ip[s]]++] = s;

  // Work items: an expert's rows in chunks of at most kItemRows, so that one big expert (a dense MLP run
  // as a single expert over every row) still spreads over the threads. Each item writes only its own
  // slots' rows of y_slot [T * k, D].
  constexpr int64_t kItemRows = 32;
  std::vector<int64_t> item_expert, item_begin;
  for (int64_t e = 0; e < e_dim; ++e)
    for (int64_t b = start[e]; b < start[e + 1]; b += kItemRows) item_expert.push_back(e), item_begin.push_back(b);
  std::vector<float> y_slot(t_dim * k * d_dim);
  const float *xp = x.typed_data(), *wgp = wg.typed_data(), *wup = wu.typed_data(), *wdp = wd.typed_data();
  ParallelFor(pool, static_cast<int64_t>(item_expert.size()), [&](int64_t item) {
    const int64_t e = item_expert[item], b = item_begin[item];
    const int64_t n = std::min(kItemRows, start[e + 1] - b);
    const int64_t* rows = slot.data() + b;
    thread_local std::vector<float> xe, g, u;
    xe.resize(n * d_dim), g.resize(n * f_dim), u.resize(n * f_dim);
    for (int64_t i = 0; i < n; ++i) std::memcpy(&xe[i * d_dim], xp + (rows[i] / k) * d_dim, sizeof(float) * d_dim);
    MatMulPanels(xe.data(), n, d_dim, wgp + e * d_dim * f_dim, f_dim, gd[3], g.data());
    MatMulPanels(xe.data(), n, d_dim, wup + e * d_dim * f_dim, f_dim, gd[3], u.data());
    for (int64_t i = 0; i < n * f_dim; ++i) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
    MatMulPanels(g.data(), n, f_dim, wdp + e * f_dim * d_dim, d_dim, dd[3], xe.data());  // xe reused as output
    for (int64_t i = 0; i < n; ++i) std::memcpy(&y_slot[rows[i] * d_dim], &xe[i * d_dim], sizeof(float) * d_dim);
  });

  // y_t = sum_j w_tj * y_slot[t, j], j in order: the same sums whichever thread ran which expert.
  float* yp = out->typed_data();
  for (int64_t t = 0; t < t_dim; ++t) {
    float* yrow = yp + t * d_dim;
    std::fill(yrow, yrow + d_dim, 0.f);
    for (int64_t j = 0; j < k; ++j) {
      const float wt = wp[t * k + j];
      if (wt == 0.f) continue;
      const float* src = &y_slot[(t * k + j) * d_dim];
      for (int64_t i = 0; i < d_dim; ++i) yrow[i] += wt * src[i];
    }
  }
  return ffi::Error::Success();
}

// exp over a vector of floats (Cephes' expf scheme: x = n ln2 + r, |r| <= ln2 / 2, a degree-5 polynomial
// for e^r, 2^n through the exponent bits); relative error ~1e-7 for x in [-87, 88], inputs clamped to it.
template <typename V>
inline V Exp(V x) {
  typedef int32_t I __attribute__((vector_size(sizeof(V))));
  const V lo = V{} - 87.3f, hi = V{} + 88.3f;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V magic = V{} + 12582912.f;  // 1.5 * 2^23: adding and subtracting rounds to the nearest integer
  const V n = (x * 1.44269504088896341f + magic) - magic;
  const V r = x - n * 0.693359375f + n * 2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V y = p * r * r + r + 1.f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  V two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return y * two_n;
}

inline float Dot(const float* a, const float* b, int64_t n) {
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// The attention kernel works on 8 floats at a time on every target (8 slots per score vector; latent
// rows in 8-column pieces), whatever kLanes the matmul uses.
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
inline v8 Load8(const float* p) { return *reinterpret_cast<const v8u*>(p); }
inline void Store8(float* p, v8 v) { *reinterpret_cast<v8u*>(p) = v; }

#ifdef __AVX2__
// The 8 horizontal sums of a[0..7], in order, as one vector.
inline v8 HSum8(const v8* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#endif

ffi::Error MlaDecodeAttentionImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q_lat, ffi::Buffer<ffi::F32> q_pe,
                                  ffi::Buffer<ffi::F32> latent, ffi::Buffer<ffi::F32> k_rope,
                                  ffi::Buffer<ffi::PRED> mask, float scale, ffi::ResultBuffer<ffi::F32> out) {
  const auto qd = q_lat.dimensions(), pd = q_pe.dimensions(), cd = latent.dimensions(), kd = k_rope.dimensions(),
             md = mask.dimensions();
  if (qd.size() != 3 || pd.size() != 3 || cd.size() != 3 || kd.size() != 3 || md.size() != 2)
    return ffi::Error::InvalidArgument(
        "mla_decode_attention: expected q_lat [B, N, R], q_pe [B, N, P], latent [B, L, R], k_rope [B, L, P], "
        "mask [B, L]");
  const int64_t b_dim = qd[0], n_dim = qd[1], r_dim = qd[2], p_dim = pd[2], l_dim = cd[1];
  if (pd[0] != b_dim || pd[1] != n_dim || cd[0] != b_dim || cd[2] != r_dim || kd[0] != b_dim || kd[1] != l_dim ||
      kd[2] != p_dim || md[0] != b_dim || md[1] != l_dim)
    return ffi::Error::InvalidArgument("mla_decode_attention: inconsistent shapes");
  const float *qp = q_lat.typed_data(), *pp = q_pe.typed_data(), *cp = latent.typed_data(), *kp = k_rope.typed_data();
  const bool* mp = mask.typed_data();
  float* op = out->typed_data();
  // Per row and head: scores of the unmasked slots 8 at a time (AVX2: 8 dot products reduced into one
  // vector), a vector softmax, then the weighted sum of latent rows.
  ParallelFor(pool, b_dim, [&](int64_t b) {
    thread_local std::vector<int64_t> slot_list;
    thread_local std::vector<float> score_buf;
    slot_list.clear();
    for (int64_t s = 0; s < l_dim; ++s)
      if (mp[b * l_dim + s]) slot_list.push_back(s);
    const bool none = slot_list.empty();  // every score masked: XLA's softmax is then uniform over all slots
    if (none)
      for (int64_t s = 0; s < l_dim; ++s) slot_list.push_back(s);
    const int64_t count = slot_list.size(), width = (count + 7) / 8 * 8;
    for (int64_t i = count; i < width; ++i) slot_list.push_back(slot_list[0]);  // padding: any valid row
    score_buf.resize(width);
    const int64_t* slots = slot_list.data();
    float* sc = score_buf.data();
    const float* c = cp + b * l_dim * r_dim;
    const float* kpe = kp + b * l_dim * p_dim;
    for (int64_t h = 0; h < n_dim; ++h) {
      const float* q = qp + (b * n_dim + h) * r_dim;
      const float* qr = pp + (b * n_dim + h) * p_dim;
      // Scores, 8 slots at a time: sc[i + j] = scale * (q . c_slot + qr . k_slot).
      if (none) std::fill(sc, sc + width, 0.f);
      for (int64_t i = 0; i < width && !none; i += 8) {
#ifdef __AVX2__
        if (r_dim % 8 == 0 && p_dim % 8 == 0) {
          v8 acc[8];
          for (int j = 0; j < 8; ++j) {
            const float* cj = c + slots[i + j] * r_dim;
            const float* kj = kpe + slots[i + j] * p_dim;
            v8 a = v8{};
            for (int64_t v = 0; v < r_dim; v += 8) a += Load8(q + v) * Load8(cj + v);
            for (int64_t v = 0; v < p_dim; v += 8) a += Load8(qr + v) * Load8(kj + v);
            acc[j] = a;
          }
          Store8(sc + i, HSum8(acc) * scale);
          continue;
        }
#endif
        for (int64_t j = 0; j < 8; ++j)
          sc[i + j] = (Dot(q, c + slots[i + j] * r_dim, r_dim) + Dot(qr, kpe + slots[i + j] * p_dim, p_dim)) * scale;
      }
      float top = -INFINITY;
      for (int64_t i = 0; i < count; ++i) top = std::max(top, sc[i]);
      float total = 0.f;
      for (int64_t i = 0; i < width; i += 8) Store8(sc + i, Exp(Load8(sc + i) - top));
      for (int64_t i = 0; i < count; ++i) total += sc[i];
      // Weights first, then the latent rows 32 columns at a time into register accumulators.
      const float inv = 1.f / total;
      for (int64_t i = 0; i < count; ++i) sc[i] *= inv;
      float* o = op + (b * n_dim + h) * r_dim;
      int64_t j = 0;
      for (; j + 32 <= r_dim; j += 32) {
        v8 acc[4] = {v8{}, v8{}, v8{}, v8{}};
        for (int64_t i = 0; i < count; ++i) {
          const float* row = c + slots[i] * r_dim + j;
          for (int u = 0; u < 4; ++u) acc[u] += sc[i] * Load8(row + 8 * u);
        }
        for (int u = 0; u < 4; ++u) Store8(o + j + 8 * u, acc[u]);
      }
      for (; j < r_dim; ++j) {
        float acc = 0.f;
        for (int64_t i = 0; i < count; ++i) acc += sc[i] * c[slots[i] * r_dim + j];
        o[j] = acc;
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(R1jaxRoutedExperts, RoutedExpertsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(R1jaxMlaDecodeAttention, MlaDecodeAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>());

// The widest column panel the routed-experts kernel reads (8 or 16 floats per vector x kCols), and the
// narrowest (one vector): every power-of-two width between them works too.
extern "C" int64_t R1jaxPanelWidth() { return kPanel; }
extern "C" int64_t R1jaxVectorWidth() { return kLanes; }
