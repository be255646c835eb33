// 16 float lanes in one AVX-512 register (AVX512F instructions only).
#pragma once

#include <immintrin.h>

namespace jaxlstm {

struct VecAvx512 {
  using T = __m512;
  using M = __mmask16;
  static constexpr int N = 16;
  static constexpr int kRows = 6;  // batch rows per matmul tile: 6 x 4 accumulators of 32 zmm

  static T zero() { return _mm512_setzero_ps(); }
  static T set1(float x) { return _mm512_set1_ps(x); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static M first(int n) { return n >= N ? M(0xFFFF) : M((1u << n) - 1u); }
  static T loadn(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void storen(float* p, T v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T div(T a, T b) { return _mm512_div_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }    // a*b + c
  static T fnmadd(T a, T b, T c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a*b
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static T abs(T a) {
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
  }
  // |magnitude| with the sign of `sign`.
  static T copysign(T magnitude, T sign) {
    const __m512i m = _mm512_set1_epi32(0x7fffffff);
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(m, _mm512_castps_si512(magnitude),
                                                         _mm512_castps_si512(sign), 0xCA));
  }
  static M lt(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M gt(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static T select(M m, T yes, T no) { return _mm512_mask_blend_ps(m, no, yes); }
  static T round(T a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // 2^n for whole numbers n in [-126, 127] held as floats.
  static T pow2(T n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
};

}  // namespace jaxlstm
