/* Thin fp32 linear products for CPU decoding: y[M, N] = x[M, K] @ W[N, K]^T (+ b[N]) for few rows M.
 *
 * A cached decode step multiplies 2 S rows (the CFG batch) by every weight matrix, so it is bound by how fast W
 * streams from memory. General GEMM kernels (MKL sgemm, oneDNN) read such thin products at 40-70% of a core's
 * bandwidth; this kernel streams W from memory once, row-major as stored, four rows at a time (four sequential
 * streams for the hardware prefetchers). Each tile of 4 rows of W is multiplied by the rows of x two at a time
 * (eight AVX2 accumulators), so for M > 2 the tile is re-read from the L1/L2 caches, not from memory.
 *
 * Build: cc -O3 -mavx2 -mfma [-fopenmp] -shared -fPIC (vaura/thin_linear.py compiles it once into the cache).
 * Sums run in 8 lanes then across lanes, so results differ from other kernels by float rounding only.
 * All pointers are dense row-major fp32; b may be NULL. Rows of W are split across nthreads OpenMP threads.
 */
#include <immintrin.h>
#include <stdint.h>

int vaura_thin_linear_abi(void) { return 1; }

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 4 rows of W (w, stride K) times 2 rows of x: out0[r] = w_r . xa, out1[r] = w_r . xb */
static void tile_4x2(const float *w, int64_t K, const float *xa, const float *xb, float *out0, float *out1) {
    const float *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
    __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        const __m256 u = _mm256_loadu_ps(xa + k), v = _mm256_loadu_ps(xb + k);
        const __m256 r0 = _mm256_loadu_ps(w0 + k), r1 = _mm256_loadu_ps(w1 + k);
        const __m256 r2 = _mm256_loadu_ps(w2 + k), r3 = _mm256_loadu_ps(w3 + k);
        a0 = _mm256_fmadd_ps(r0, u, a0); b0 = _mm256_fmadd_ps(r0, v, b0);
        a1 = _mm256_fmadd_ps(r1, u, a1); b1 = _mm256_fmadd_ps(r1, v, b1);
        a2 = _mm256_fmadd_ps(r2, u, a2); b2 = _mm256_fmadd_ps(r2, v, b2);
        a3 = _mm256_fmadd_ps(r3, u, a3); b3 = _mm256_fmadd_ps(r3, v, b3);
    }
    float s[8] = {hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3), hsum8(b0), hsum8(b1), hsum8(b2), hsum8(b3)};
    for (; k < K; k++) {
        s[0] += w0[k] * xa[k]; s[1] += w1[k] * xa[k]; s[2] += w2[k] * xa[k]; s[3] += w3[k] * xa[k];
        s[4] += w0[k] * xb[k]; s[5] += w1[k] * xb[k]; s[6] += w2[k] * xb[k]; s[7] += w3[k] * xb[k];
    }
    for (int r = 0; r < 4; r++) { out0[r] = s[r]; out1[r] = s[4 + r]; }
}

/* 4 rows of W times 1 row of x */
static void tile_4x1(const float *w, int64_t K, const float *xa, float *out0) {
    const float *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        const __m256 u = _mm256_loadu_ps(xa + k);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), u, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), u, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), u, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), u, a3);
    }
    float s[4] = {hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)};
    for (; k < K; k++) {
        s[0] += w0[k] * xa[k]; s[1] += w1[k] * xa[k]; s[2] += w2[k] * xa[k]; s[3] += w3[k] * xa[k];
    }
    for (int r = 0; r < 4; r++) out0[r] = s[r];
}

/* one row of W times one row of x */
static float dot(const float *w, const float *x, int64_t K) {
    __m256 a = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a);
    float s = hsum8(a);
    for (; k < K; k++) s += w[k] * x[k];
    return s;
}

void vaura_thin_linear_f32(const float *W, const float *b, const float *x, float *y, int64_t M, int64_t N,
                           int64_t K, int nthreads) {
    const int64_t tiles = N / 4;
#ifndef _OPENMP
    (void)nthreads;
#endif
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && tiles > 1)
#endif
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t n = 4 * t;
        const float *w = W + n * K;
        float o0[4], o1[4];
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) {
            tile_4x2(w, K, x + m * K, x + (m + 1) * K, o0, o1);
            for (int r = 0; r < 4; r++) { y[m * N + n + r] = o0[r]; y[(m + 1) * N + n + r] = o1[r]; }
        }
        if (m < M) {
            tile_4x1(w, K, x + m * K, o0);
            for (int r = 0; r < 4; r++) y[m * N + n + r] = o0[r];
        }
    }
    for (int64_t n = 4 * tiles; n < N; n++)
        for (int64_t m = 0; m < M; m++) y[m * N + n] = dot(W + n * K, x + m * K, K);
    if (b)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) y[m * N + n] += b[n];
}
