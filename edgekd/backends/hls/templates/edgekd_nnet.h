// edgekd HLS layer library: integer layers for QDQ-quantized networks.
// Plain C++ (g++ C-simulation) and Vitis HLS (pragmas) from the same source.
// Activations are int8/uint8 with a zero point; accumulators are accum_t (see defines.h).
// Rounding is half-to-even everywhere, like ONNX Runtime.
#ifndef EDGEKD_NNET_H_
#define EDGEKD_NNET_H_

#include <cmath>
#include <cstdint>

#include "defines.h"

namespace ekd {

// Round-half-to-even of p / 2^s with arithmetic shifts only (no division).
static inline int64_t rshift_rne(int64_t p, int s) {
    if (s <= 0) return p;
    const int64_t half = (int64_t)1 << (s - 1);
    const int64_t odd = (p >> s) & 1;
    return (p + half - 1 + odd) >> s;
}

static inline int32_t clamp_i32(int64_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

// ORT-compatible float path: round(float(acc) * scale) in float32.
static inline int64_t round_float(float v) {
    if (v > 2147483520.0f) return 2147483647LL;
    if (v < -2147483648.0f) return -2147483648LL;
    return (int64_t)std::nearbyint(v);
}

// Requantize one accumulator with channel c's multiplier (float32 or integer multiplier + shift).
template <class CFG>
static inline int32_t requant(accum_t acc, int c, const float *mf, const int32_t *m, const int8_t *s) {
#if EDGEKD_REQUANT_FLOAT
    (void)m; (void)s;
    int64_t r = round_float((float)acc * mf[CFG::per_channel ? c : 0]);
#else
    (void)mf;
    int64_t r = rshift_rne((int64_t)acc * (int64_t)m[CFG::per_channel ? c : 0], s[CFG::per_channel ? c : 0]);
#endif
    return clamp_i32(r + CFG::out_zp, CFG::lo, CFG::hi);
}

// Dequantize-then-quantize of a sum of rescaled inputs (Add, Concat, Requant): ORT runs these
// as DequantizeLinear (float(x - zp) * scale), a float op, and QuantizeLinear (v / scale).
static inline int32_t finish_float(float v, float out_scale, int32_t zp, int32_t lo, int32_t hi) {
    return clamp_i32(round_float(v / out_scale) + zp, lo, hi);
}

// ---------------------------------------------------------------- Conv (1D is H = 1)
template <class CFG, typename in_t, typename out_t, typename w_t>
void conv2d(const in_t x[CFG::in_c * CFG::in_h * CFG::in_w], out_t y[CFG::out_c * CFG::out_h * CFG::out_w],
            const w_t w[CFG::out_c * (CFG::in_c / CFG::groups) * CFG::k_h * CFG::k_w], const int32_t b[CFG::out_c],
            const float mf[], const int32_t m[], const int8_t s[]) {
    const int icg = CFG::in_c / CFG::groups;
    const int ocg = CFG::out_c / CFG::groups;
ConvPixel:
    for (int oh = 0; oh < CFG::out_h; oh++) {
        for (int ow = 0; ow < CFG::out_w; ow++) {
#pragma HLS PIPELINE II = CFG::reuse
#pragma HLS ALLOCATION operation instances = mul limit = CFG::n_mult
        ConvOut:
            for (int oc = 0; oc < CFG::out_c; oc++) {
                accum_t acc = b[oc];
                const int g = oc / ocg;
            ConvTap:
                for (int ic = 0; ic < icg; ic++) {
                    for (int kh = 0; kh < CFG::k_h; kh++) {
                        const int ih = oh * CFG::s_h - CFG::p_t + kh * CFG::d_h;
                        if (ih < 0 || ih >= CFG::in_h) continue;  // padding holds the zero point: adds 0
                        for (int kw = 0; kw < CFG::k_w; kw++) {
                            const int iw = ow * CFG::s_w - CFG::p_l + kw * CFG::d_w;
                            if (iw < 0 || iw >= CFG::in_w) continue;
                            const int xi = ((g * icg + ic) * CFG::in_h + ih) * CFG::in_w + iw;
                            const int wi = ((oc * icg + ic) * CFG::k_h + kh) * CFG::k_w + kw;
                            acc += (accum_t)((int32_t)x[xi] - CFG::in_zp) * (accum_t)w[wi];
                        }
                    }
                }
                const int yi = (oc * CFG::out_h + oh) * CFG::out_w + ow;
                if (CFG::raw) y[yi] = (out_t)acc;
                else y[yi] = (out_t)requant<CFG>(acc, oc, mf, m, s);
            }
        }
    }
}

// ---------------------------------------------------------------- Dense
template <class CFG, typename in_t, typename out_t, typename w_t>
void dense(const in_t x[CFG::n_in], out_t y[CFG::n_out], const w_t w[CFG::n_out * CFG::n_in],
           const int32_t b[CFG::n_out], const float mf[], const int32_t m[], const int8_t s[]) {
#pragma HLS PIPELINE II = CFG::reuse
#pragma HLS ALLOCATION operation instances = mul limit = CFG::n_mult
DenseOut:
    for (int o = 0; o < CFG::n_out; o++) {
        accum_t acc = b[o];
    DenseIn:
        for (int i = 0; i < CFG::n_in; i++) {
            acc += (accum_t)((int32_t)x[i] - CFG::in_zp) * (accum_t)w[o * CFG::n_in + i];
        }
        if (CFG::raw) y[o] = (out_t)acc;
        else y[o] = (out_t)requant<CFG>(acc, o, mf, m, s);
    }
}

// ---------------------------------------------------------------- MaxPool / AveragePool
template <class CFG, typename in_t, typename out_t>
void pool2d(const in_t x[CFG::c * CFG::in_h * CFG::in_w], out_t y[CFG::c * CFG::out_h * CFG::out_w],
            const float mf[], const int32_t m[], const int8_t s[]) {
PoolPixel:
    for (int c = 0; c < CFG::c; c++) {
        for (int oh = 0; oh < CFG::out_h; oh++) {
            for (int ow = 0; ow < CFG::out_w; ow++) {
#pragma HLS PIPELINE II = 1
                // no multipliers to share (max) or one per output (average): one output per cycle
                int32_t best = -2147483647 - 1;
                accum_t sum = 0;
                float fsum = 0.0f;
                int count = 0;
            PoolTap:
                for (int kh = 0; kh < CFG::k_h; kh++) {
                    for (int kw = 0; kw < CFG::k_w; kw++) {
                        const int ih = oh * CFG::s_h - CFG::p_t + kh;
                        const int iw = ow * CFG::s_w - CFG::p_l + kw;
                        const bool inside = ih >= 0 && ih < CFG::in_h && iw >= 0 && iw < CFG::in_w;
                        if (inside) {
                            const int32_t v = (int32_t)x[(c * CFG::in_h + ih) * CFG::in_w + iw];
                            best = v > best ? v : best;
                            sum += v - CFG::in_zp;
                            fsum += (float)(v - CFG::in_zp) * CFG::in_scale;
                        }
                        if (inside || CFG::count_include_pad) count++;
                    }
                }
                const int yi = (c * CFG::out_h + oh) * CFG::out_w + ow;
                if (CFG::is_max) {
                    y[yi] = (out_t)best;
                } else if (EDGEKD_REQUANT_FLOAT && CFG::float_average) {
                    // ORT's AveragePool on int8: dequantize, average in float32, quantize
                    y[yi] = (out_t)finish_float(fsum / (float)count, CFG::out_scale, CFG::out_zp, CFG::lo, CFG::hi);
                } else {
                    // one multiplier per possible window count (borders see fewer taps)
                    y[yi] = (out_t)requant<CFG>(sum, count - 1, mf, m, s);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- Add / Requant / Concat
template <class CFG, typename a_t, typename b_t, typename out_t>
void add(const a_t a[CFG::n], const b_t b[CFG::n], out_t y[CFG::n]) {
AddLoop:
    for (int i = 0; i < CFG::n; i++) {
#pragma HLS PIPELINE II = CFG::reuse
        const int32_t da = (int32_t)a[i] - CFG::a_zp, db = (int32_t)b[i] - CFG::b_zp;
#if EDGEKD_REQUANT_FLOAT
        const float va = (float)da * CFG::a_scale, vb = (float)db * CFG::b_scale;
        y[i] = (out_t)finish_float(va + vb, CFG::out_scale, CFG::out_zp, CFG::lo, CFG::hi);
#else
        const int64_t acc = (int64_t)da * CFG::a_mult + (int64_t)db * CFG::b_mult;
        y[i] = (out_t)clamp_i32(rshift_rne(acc, CFG::shift) + CFG::out_zp, CFG::lo, CFG::hi);
#endif
    }
}

template <class CFG, typename in_t, typename out_t>
void requant_copy(const in_t x[CFG::n], out_t y[CFG::n]) {
RequantLoop:
    for (int i = 0; i < CFG::n; i++) {
#pragma HLS UNROLL factor = CFG::unroll
        const int32_t d = (int32_t)x[i] - CFG::in_zp;
#if EDGEKD_REQUANT_FLOAT
        y[i] = (out_t)finish_float((float)d * CFG::in_scale, CFG::out_scale, CFG::out_zp, CFG::lo, CFG::hi);
#else
        y[i] = (out_t)clamp_i32(rshift_rne((int64_t)d * CFG::mult, CFG::shift) + CFG::out_zp, CFG::lo, CFG::hi);
#endif
    }
}

// One concat input: copy `inner` contiguous elements per outer index into the output slice.
template <class CFG, typename in_t, typename out_t>
void concat_part(const in_t x[CFG::outer * CFG::inner], out_t y[CFG::outer * CFG::out_inner]) {
ConcatLoop:
    for (int o = 0; o < CFG::outer; o++) {
        for (int i = 0; i < CFG::inner; i++) {
#pragma HLS PIPELINE II = 1
            const int32_t d = (int32_t)x[o * CFG::inner + i] - CFG::in_zp;
#if EDGEKD_REQUANT_FLOAT
            int32_t v = finish_float((float)d * CFG::in_scale, CFG::out_scale, CFG::out_zp, CFG::lo, CFG::hi);
#else
            int32_t v = clamp_i32(rshift_rne((int64_t)d * CFG::mult, CFG::shift) + CFG::out_zp, CFG::lo, CFG::hi);
#endif
            if (CFG::raw) v = (int32_t)x[o * CFG::inner + i];  // float graph output: the codes, dequantized on the host
            y[o * CFG::out_inner + CFG::offset + i] = (out_t)v;
        }
    }
}

// ---------------------------------------------------------------- Slice / Split / nearest Resize
// A copy through per-axis index tables on the [C, H, W] view: int8 codes move, nothing is computed.
template <class CFG, typename in_t, typename out_t>
void gather(const in_t x[CFG::in_c * CFG::in_h * CFG::in_w], out_t y[CFG::out_c * CFG::out_h * CFG::out_w],
            const int32_t ic[CFG::out_c], const int32_t ih[CFG::out_h], const int32_t iw[CFG::out_w]) {
GatherLoop:
    for (int c = 0; c < CFG::out_c; c++) {
        for (int h = 0; h < CFG::out_h; h++) {
            for (int w = 0; w < CFG::out_w; w++) {
#pragma HLS PIPELINE II = 1
                y[(c * CFG::out_h + h) * CFG::out_w + w] = (out_t)x[(ic[c] * CFG::in_h + ih[h]) * CFG::in_w + iw[w]];
            }
        }
    }
}

// ---------------------------------------------------------------- Sigmoid / HardSigmoid / HardSwish
// One ROM read per element: the table holds the quantized result for every input code.
template <class CFG, typename in_t, typename out_t>
void lookup(const in_t x[CFG::n], out_t y[CFG::n], const int16_t table[]) {
LookupLoop:
    for (int i = 0; i < CFG::n; i++) {
#pragma HLS UNROLL factor = CFG::unroll
        y[i] = (out_t)table[(int32_t)x[i] - CFG::in_lo];
    }
}

// ---------------------------------------------------------------- ConvTranspose (1D is H = 1)
// Each output gathers the input taps that reach it: oh = ih * s_h - p_t + kh * d_h.
template <class CFG, typename in_t, typename out_t, typename w_t>
void conv_transpose2d(const in_t x[CFG::in_c * CFG::in_h * CFG::in_w], out_t y[CFG::out_c * CFG::out_h * CFG::out_w],
                      const w_t w[CFG::out_c * (CFG::in_c / CFG::groups) * CFG::k_h * CFG::k_w],
                      const int32_t b[CFG::out_c], const float mf[], const int32_t m[], const int8_t s[]) {
    const int icg = CFG::in_c / CFG::groups;
    const int ocg = CFG::out_c / CFG::groups;
ConvTPixel:
    for (int oh = 0; oh < CFG::out_h; oh++) {
        for (int ow = 0; ow < CFG::out_w; ow++) {
#pragma HLS PIPELINE II = CFG::reuse
#pragma HLS ALLOCATION operation instances = mul limit = CFG::n_mult
        ConvTOut:
            for (int oc = 0; oc < CFG::out_c; oc++) {
                accum_t acc = b[oc];
                const int g = oc / ocg;
            ConvTTap:
                for (int ic = 0; ic < icg; ic++) {
                    for (int kh = 0; kh < CFG::k_h; kh++) {
                        const int th = oh + CFG::p_t - kh * CFG::d_h;
                        if (th < 0 || th % CFG::s_h != 0 || th / CFG::s_h >= CFG::in_h) continue;
                        for (int kw = 0; kw < CFG::k_w; kw++) {
                            const int tw = ow + CFG::p_l - kw * CFG::d_w;
                            if (tw < 0 || tw % CFG::s_w != 0 || tw / CFG::s_w >= CFG::in_w) continue;
                            const int xi = ((g * icg + ic) * CFG::in_h + th / CFG::s_h) * CFG::in_w + tw / CFG::s_w;
                            const int wi = ((oc * icg + ic) * CFG::k_h + kh) * CFG::k_w + kw;
                            acc += (accum_t)((int32_t)x[xi] - CFG::in_zp) * (accum_t)w[wi];
                        }
                    }
                }
                y[(oc * CFG::out_h + oh) * CFG::out_w + ow] = (out_t)requant<CFG>(acc, oc, mf, m, s);
            }
        }
    }
}

// ---------------------------------------------------------------- bilinear Resize
// float32: ONNX Runtime's DQ -> Resize -> Q step by step (its weights, its summation order);
// fixed point: the same taps with integer weights in 2^-frac units, one requantization.
template <class CFG, typename in_t, typename out_t>
void resize_bilinear(const in_t x[CFG::in_c * CFG::in_h * CFG::in_w], out_t y[CFG::out_c * CFG::out_h * CFG::out_w],
                     const int32_t yi[], const int32_t xi[], const float wyf[], const float wxf[], const int32_t wyi[],
                     const int32_t wxi[], const float mf[], const int32_t m[], const int8_t s[]) {
ResizePixel:
    for (int c = 0; c < CFG::out_c; c++) {
        for (int oh = 0; oh < CFG::out_h; oh++) {
            for (int ow = 0; ow < CFG::out_w; ow++) {
#pragma HLS PIPELINE II = CFG::reuse
                const int base = c * CFG::in_h * CFG::in_w;
                const int r1 = base + yi[2 * oh] * CFG::in_w, r2 = base + yi[2 * oh + 1] * CFG::in_w;
                const int c1 = xi[2 * ow], c2 = xi[2 * ow + 1];
                const int32_t d11 = (int32_t)x[r1 + c1] - CFG::in_zp, d21 = (int32_t)x[r1 + c2] - CFG::in_zp;
                const int32_t d12 = (int32_t)x[r2 + c1] - CFG::in_zp, d22 = (int32_t)x[r2 + c2] - CFG::in_zp;
                const int yo = (c * CFG::out_h + oh) * CFG::out_w + ow;
#if EDGEKD_REQUANT_FLOAT
                (void)wyi; (void)wxi;
                const float wy1 = wyf[2 * oh], wy2 = wyf[2 * oh + 1], wx1 = wxf[2 * ow], wx2 = wxf[2 * ow + 1];
                const float v = wx1 * wy1 * ((float)d11 * CFG::in_scale) + wx2 * wy1 * ((float)d21 * CFG::in_scale) +
                                wx1 * wy2 * ((float)d12 * CFG::in_scale) + wx2 * wy2 * ((float)d22 * CFG::in_scale);
                y[yo] = (out_t)finish_float(v, CFG::out_scale, CFG::out_zp, CFG::lo, CFG::hi);
#else
                (void)wyf; (void)wxf; (void)mf;
                const int64_t acc = (int64_t)wyi[2 * oh] * (wxi[2 * ow] * d11 + wxi[2 * ow + 1] * d21) +
                                    (int64_t)wyi[2 * oh + 1] * (wxi[2 * ow] * d12 + wxi[2 * ow + 1] * d22);
                y[yo] = (out_t)clamp_i32(rshift_rne(acc * (int64_t)m[0], s[0]) + CFG::out_zp, CFG::lo, CFG::hi);
#endif
            }
        }
    }
}

template <int N, typename in_t, typename out_t>
void copy(const in_t x[N], out_t y[N]) {
CopyLoop:
    for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
        y[i] = (out_t)x[i];
    }
}

}  // namespace ekd

#endif
