/* ops: kernels of the fspo transformer. See ops.h for shapes and conventions. */
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Attention works on blocks of this many query rows so that a query block
 * only multiplies against the keys at or before its last row: causal
 * attention then costs about half of the full T x T product. */
#define ATTN_QBLOCK 128

void matmul_forward(float *out, const float *inp, const float *w, int N, int IN, int OUT)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, IN, 1.0f, inp, IN, w, IN, 0.0f, out, OUT);
}

void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int IN, int OUT)
{
    if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IN, OUT, 1.0f, dout, OUT, w, IN, 1.0f, dinp, IN);
    if (dw) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dw, IN);
}

void embedding_forward(float *out, const int32_t *tokens, const float *emb, int N, int C)
{
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, emb + (size_t)tokens[n] * C, sizeof(float) * C);
}

void embedding_backward(float *demb, const float *dout, const int32_t *tokens, int N, int C)
{
    for (int n = 0; n < N; n++) {
        float *d = demb + (size_t)tokens[n] * C;
        const float *s = dout + (size_t)n * C;
        for (int c = 0; c < C; c++) d[c] += s[c];
    }
}

#define RMSNORM_EPS 1e-5f

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *g, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / (float)C + RMSNORM_EPS);
        rstd[n] = r;
        for (int c = 0; c < C; c++) y[c] = x[c] * r * g[c];
    }
}

void rmsnorm_backward(float *dinp, float *dg, const float *dout, const float *inp, const float *g, const float *rstd,
                      int N, int C)
{
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *dy = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float r = rstd[n];
        /* y = x r g with r = (mean(x^2)+eps)^(-1/2), so dr/dx_i = -r^3 x_i / C */
        float dot = 0.0f;
        for (int c = 0; c < C; c++) dot += dy[c] * g[c] * x[c];
        float k = r * r * r * dot / (float)C;
        for (int c = 0; c < C; c++) {
            dx[c] += r * dy[c] * g[c] - k * x[c];
            dg[c] += dy[c] * x[c] * r;
        }
    }
}

void rope_tables(float *cos_t, float *sin_t, int max_pos, int hd)
{
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        /* double precision: angles reach max_pos radians, where a float
         * product would already lose the low bits */
        double freq = pow(10000.0, -2.0 * i / (double)hd);
        for (int p = 0; p < max_pos; p++) {
            double a = (double)p * freq;
            cos_t[(size_t)p * half + i] = (float)cos(a);
            sin_t[(size_t)p * half + i] = (float)sin(a);
        }
    }
}

/* Rotates pairs by +angle (sign = 1) or -angle (sign = -1) in the q and k
 * thirds of a [N,3C] buffer. */
static void rope_rotate(float *qkv, const int32_t *pos, const float *cos_t, const float *sin_t, int N, int C, int H,
                        float sign)
{
    int hd = C / H, half = hd / 2;
    for (int n = 0; n < N; n++) {
        const float *cs = cos_t + (size_t)pos[n] * half;
        const float *sn = sin_t + (size_t)pos[n] * half;
        for (int part = 0; part < 2; part++) { /* 0: q, 1: k */
            float *z = qkv + (size_t)n * 3 * C + (size_t)part * C;
            for (int h = 0; h < H; h++, z += hd) {
                for (int i = 0; i < half; i++) {
                    float c = cs[i], s = sign * sn[i];
                    float z0 = z[2 * i], z1 = z[2 * i + 1];
                    z[2 * i] = z0 * c - z1 * s;
                    z[2 * i + 1] = z0 * s + z1 * c;
                }
            }
        }
    }
}

void rope_forward(float *qkv, const int32_t *pos, const float *cos_t, const float *sin_t, int N, int C, int H)
{
    rope_rotate(qkv, pos, cos_t, sin_t, N, C, H, 1.0f);
}

void rope_backward(float *dqkv, const int32_t *pos, const float *cos_t, const float *sin_t, int N, int C, int H)
{
    rope_rotate(dqkv, pos, cos_t, sin_t, N, C, H, -1.0f);
}

/* Softmax of one score row in place over keys 0..t, honoring visibility
 * (vis_row NULL: plain causal); keys t+1..nk-1 (later tokens inside this
 * block's key range) are zeroed. */
static void masked_softmax_row(float *row, int t, int nk, const int32_t *seg_row, const uint8_t *vis_row)
{
    float mx = row[t]; /* a token always sees itself */
    for (int u = 0; u < t; u++)
        if ((!vis_row || vis_row[seg_row[u]]) && row[u] > mx) mx = row[u];
    float sum = 0.0f;
    for (int u = 0; u < t; u++) {
        float e = (!vis_row || vis_row[seg_row[u]]) ? expf(row[u] - mx) : 0.0f;
        row[u] = e;
        sum += e;
    }
    row[t] = expf(row[t] - mx);
    sum += row[t];
    float inv = 1.0f / sum;
    for (int u = 0; u <= t; u++) row[u] *= inv;
    for (int u = t + 1; u < nk; u++) row[u] = 0.0f;
}

void attention_forward(float *out, float *att, const float *qkv, const int32_t *seg, const uint8_t *vis, int B, int T,
                       int C, int H, int S)
{
    int hd = C / H, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        const int32_t *seg_row = seg + (size_t)b * T;
        const uint8_t *vis_b = vis + (size_t)b * S * S;
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)b * T * ld + (size_t)h * hd;
            const float *k = q + C, *v = q + 2 * C;
            float *A = att + ((size_t)b * H + h) * T * T;
            float *o = out + (size_t)b * T * C + (size_t)h * hd;
            for (int i0 = 0; i0 < T; i0 += ATTN_QBLOCK) {
                int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T, m = i1 - i0, nk = i1;
                float *Ab = A + (size_t)i0 * T;
                /* scores [m, nk] = scale * Q[i0:i1] K[0:nk]^T */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, hd, scale, q + (size_t)i0 * ld, ld, k,
                            ld, 0.0f, Ab, T);
                for (int t = i0; t < i1; t++)
                    masked_softmax_row(A + (size_t)t * T, t, nk, seg_row, vis_b + (size_t)seg_row[t] * S);
                /* out[i0:i1] = P [m, nk] V[0:nk] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, nk, 1.0f, Ab, T, v, ld, 0.0f,
                            o + (size_t)i0 * C, C);
            }
        }
    }
}

void attention_cached_forward(float *out, float *scores, const float *q, int ldq, const float *kc, const float *vc,
                              int n, int len0, int C, int H)
{
    int hd = C / H, nk = len0 + n;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < H; h++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nk, hd, scale, q + (size_t)h * hd, ldq,
                    kc + (size_t)h * hd, C, 0.0f, scores, nk);
        for (int i = 0; i < n; i++) masked_softmax_row(scores + (size_t)i * nk, len0 + i, nk, NULL, NULL);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, nk, 1.0f, scores, nk, vc + (size_t)h * hd, C,
                    0.0f, out + (size_t)h * hd, C);
    }
}

void attention_backward(float *dqkv, float *datt_scratch, const float *dout, const float *att, const float *qkv,
                        int B, int T, int C, int H)
{
    int hd = C / H, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)b * T * ld + (size_t)h * hd;
            const float *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + (size_t)b * T * ld + (size_t)h * hd;
            float *dk = dq + C, *dv = dq + 2 * C;
            const float *A = att + ((size_t)b * H + h) * T * T;
            const float *dO = dout + (size_t)b * T * C + (size_t)h * hd;
            for (int i0 = 0; i0 < T; i0 += ATTN_QBLOCK) {
                int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T, m = i1 - i0, nk = i1;
                const float *P = A + (size_t)i0 * T;
                float *D = datt_scratch;
                /* dV[0:nk] += P^T dO[i0:i1] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, m, 1.0f, P, T, dO + (size_t)i0 * C, C,
                            1.0f, dv, ld);
                /* dP [m, nk] = dO[i0:i1] V[0:nk]^T */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, hd, 1.0f, dO + (size_t)i0 * C, C, v, ld,
                            0.0f, D, T);
                /* softmax backward: dS = P * (dP - sum(P * dP)), times the score scale.
                 * Masked entries have P = 0, so they get no gradient. */
                for (int r = 0; r < m; r++) {
                    int t = i0 + r;
                    const float *pr = P + (size_t)r * T;
                    float *dr = D + (size_t)r * T;
                    float s = 0.0f;
                    for (int u = 0; u <= t; u++) s += pr[u] * dr[u];
                    for (int u = 0; u <= t; u++) dr[u] = pr[u] * (dr[u] - s) * scale;
                    for (int u = t + 1; u < nk; u++) dr[u] = 0.0f;
                }
                /* dQ[i0:i1] += dS K[0:nk];  dK[0:nk] += dS^T Q[i0:i1] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, nk, 1.0f, D, T, k, ld, 1.0f,
                            dq + (size_t)i0 * ld, ld);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, m, 1.0f, D, T, q + (size_t)i0 * ld, ld,
                            1.0f, dk, ld);
            }
        }
    }
}

void swiglu_forward(float *out, const float *h13, int N, int F)
{
    for (int n = 0; n < N; n++) {
        const float *g = h13 + (size_t)n * 2 * F, *u = g + F;
        float *y = out + (size_t)n * F;
        for (int f = 0; f < F; f++) y[f] = g[f] / (1.0f + expf(-g[f])) * u[f];
    }
}

void swiglu_backward(float *dh13, const float *dout, const float *h13, int N, int F)
{
    for (int n = 0; n < N; n++) {
        const float *g = h13 + (size_t)n * 2 * F, *u = g + F;
        const float *dy = dout + (size_t)n * F;
        float *dg = dh13 + (size_t)n * 2 * F, *du = dg + F;
        for (int f = 0; f < F; f++) {
            float sig = 1.0f / (1.0f + expf(-g[f]));
            float silu = g[f] * sig;
            dg[f] += dy[f] * u[f] * sig * (1.0f + g[f] * (1.0f - sig));
            du[f] += dy[f] * silu;
        }
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void target_logp_forward(float *logp, float *lse, const float *logits, const Target *targets, int K, int N, int V)
{
    for (int n = 0; n < N; n++) {
        const float *row = logits + (size_t)n * V;
        float mx = row[0];
        for (int v = 1; v < V; v++)
            if (row[v] > mx) mx = row[v];
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += expf(row[v] - mx);
        lse[n] = mx + (float)log(sum);
    }
    for (int k = 0; k < K; k++) {
        int i = targets[k].index;
        logp[k] = logits[(size_t)i * V + targets[k].token] - lse[i];
    }
}

void target_logp_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse,
                          const Target *targets, int K, int V)
{
    for (int k = 0; k < K; k++) {
        int i = targets[k].index;
        const float *row = logits + (size_t)i * V;
        float *drow = dlogits + (size_t)i * V;
        float d = dlogp[k];
        for (int v = 0; v < V; v++) drow[v] -= d * expf(row[v] - lse[i]);
        drow[targets[k].token] += d;
    }
}
